"""Small helpers shared by the pipelines that run stages in threads (video, explain's outputs)."""
from __future__ import annotations

import queue
import statistics
import threading
from typing import List

POLL = 0.1   # seconds between checks of the stop flag while a queue is full / empty


def put_until_stopped(q: "queue.Queue", item, stop: threading.Event) -> bool:
    """Put with a bounded wait that gives up when ``stop`` is set (the consumer went away).

    Returns:
        True if the item was queued, False if ``stop`` was set first.
    """
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


def free_core(device) -> bool:
    """Whether a pipeline stage in its own thread (reading, drawing, encoding) would have a core
    of its own: the model runs on a GPU, or uses fewer threads than the cores this process may
    use. Where every core runs one of the model's threads, such a thread stalls the model's
    parallel regions whenever it runs, and the stages are faster taking turns with the model
    in one thread (benchmarks/NOTES.md, 2026-11-30, "threads only on a free core")."""
    import os
    import torch
    if torch.device(device).type != "cpu":
        return True
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                        # not Linux
        cores = os.cpu_count() or 1
    return cores > torch.get_num_threads()


class Ahead:
    """The next item of ``it``, fetched in a helper thread while the caller works on this one,
    for stages that take turns with a model on every core: the caller asks for it
    (:meth:`request`) once the model is done with a batch, and takes it (:meth:`next`) before
    the model runs again, so the helper never runs beside the model. With ``helper=False`` (the
    model on one thread: no idle core in the turn) :meth:`next` reads in the caller's thread.

    ``None`` marks the end of ``it``. The helper sets 1 torch thread for itself.
    """

    def __init__(self, it, name: str, helper: bool):
        self.it = iter(it)
        self.pending = None
        self.pool = None
        if helper:
            from concurrent.futures import ThreadPoolExecutor
            import torch
            self.pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=torch.set_num_threads,
                                           initargs=(1,))

    def request(self) -> None:
        """Start fetching the next item in the helper (nothing without one)."""
        if self.pool is not None and self.pending is None:
            self.pending = self.pool.submit(next, self.it, None)

    def next(self):
        """The next item (None at the end); an error raised while fetching it is raised here."""
        if self.pending is not None:
            item, self.pending = self.pending.result(), None
            return item
        return next(self.it, None)

    def close(self) -> None:
        """Wait for a fetch in flight (its error is dropped: the run ends anyway) and stop the helper."""
        if self.pending is not None:
            try:
                self.pending.result()
            except BaseException:  # noqa: BLE001 - the run already ends, or has its own error
                pass
            self.pending = None
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


class TurnSwitch:
    """Whether a loop that takes turns with a model on every core (the model's threads, then the
    writing of that batch by as many threads) should give one model thread to a writer thread
    instead, the caller's thread helping to write when writing falls behind.

    Taking turns, a batch costs M (the model on every core) + W (its writing). Sharing, it costs
    about max(M1, (M1 + W1) / 2): the model on one thread fewer takes M1 (1.4 M for the shipped
    model, 1.8 M for deit_small, on 2 cores) while another core writes, a batch taking W1 on one
    thread. The loop measures M and W over :data:`AFTER` batches (medians of batches 2..: the
    first is warm-up), then, unless W < :data:`HOPELESS` M (sharing cannot win when M1 >= 1.4 M),
    runs :data:`PROBES` batches with one model thread fewer, written by the caller's thread alone
    (:attr:`probing`), to measure M1 and W1 (the smallest of each), and switches when sharing is
    estimated at least 5 % faster. The switch happens once; a decision against it restores the
    thread count.

    Use: :meth:`before_model` before each model call (it sets the probe's thread count), write the
    batch alone while :attr:`probing`, then :meth:`measure` with the batch's model and write
    seconds; True once: switch now (the model then keeps ``threads - 1`` threads; the caller
    restores ``threads`` at the end).
    """

    AFTER = 4
    PROBES = 1
    HOPELESS = 0.4

    def __init__(self, allowed: bool, threads: int):
        self.allowed = bool(allowed) and threads > 1
        self.threads, self.on = threads, False
        self.model: List[float] = []
        self.write: List[float] = []
        self.probe: List[float] = []
        self.probe_write: List[float] = []

    @property
    def probing(self) -> bool:
        """True while the batches run with one model thread fewer and are written by one thread."""
        return self.allowed and len(self.model) >= self.AFTER

    def before_model(self) -> None:
        """Set the model's thread count for the coming batch (one fewer while probing)."""
        if self.probing:
            import torch
            torch.set_num_threads(self.threads - 1)

    def _decide(self, on: bool) -> bool:
        import torch
        self.allowed, self.on = False, on
        torch.set_num_threads(self.threads - 1 if on else self.threads)
        return on

    def estimate(self) -> tuple:
        """(seconds per batch taking turns, sharing) from the measurements so far."""
        M, W = statistics.median(self.model[1:]), statistics.median(self.write[1:])
        M1, W1 = min(self.probe), min(self.probe_write)
        return M + W, max(M1, (M1 + W1) / 2)

    def measure(self, model_s: float, write_s: float) -> bool:
        """Record one batch; True once, when the loop should switch now."""
        if not self.allowed:
            return False
        if len(self.model) < self.AFTER:
            self.model.append(model_s)
            self.write.append(write_s)
            if len(self.model) == self.AFTER and \
                    statistics.median(self.write[1:]) < self.HOPELESS * statistics.median(self.model[1:]):
                return self._decide(False)
            return False
        self.probe.append(model_s)
        self.probe_write.append(write_s)
        if len(self.probe) < self.PROBES:
            return False
        turns, sharing = self.estimate()
        return self._decide(sharing < 0.95 * turns)
