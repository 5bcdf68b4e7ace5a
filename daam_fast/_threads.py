"""The threads of the pipelines that explain files and videos: one reader ahead of the model, a
fixed pool of writers beside it. Nothing here changes a process-wide setting (torch's thread
count included): the caller's choice stands for the whole run.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Iterable, Iterator

import torch

__all__ = ["Ahead", "writer_threads"]

POLL = 0.1   # seconds between checks of the stop flag while a queue is full


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                        # not Linux
        return os.cpu_count() or 1


def writer_threads(device) -> int:
    """The size of the writer pool beside a model on ``device``: the cores the model leaves free
    on a CPU (at least one), up to 4 beside a GPU (one core stays with the model's launches)."""
    if torch.device(device).type != "cpu":
        return max(1, min(4, cores() - 1))
    return max(1, cores() - torch.get_num_threads())


class _End:
    pass


class Ahead:
    """Iterate ``items`` in a thread of its own, ``depth`` items ahead of the caller.

    Iterate the object itself; an exception raised by ``items`` is raised in the caller's
    thread, in order. :meth:`close` (or leaving a ``with`` block) stops the thread, also when
    the caller stops early.

    Example:
        >>> with Ahead(read_batches(), "reader") as batches:
        ...     for batch in batches:
        ...         explain(batch)
    """

    def __init__(self, items: Iterable, name: str, depth: int = 1):
        self._items = items
        self._q: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return
            self._put((_End, None))
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            self._put((None, e))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        while True:
            item, error = self._q.get()
            if error is not None:
                raise error
            if item is _End:
                return
            yield item

    def close(self) -> None:
        """Stop the thread and wait for it (the item it was reading is dropped)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=POLL)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> "Ahead":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
