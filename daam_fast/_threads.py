"""Small helpers shared by the pipelines that run stages in threads (video, explain's outputs)."""
from __future__ import annotations

import queue
import threading

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
