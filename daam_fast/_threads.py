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
