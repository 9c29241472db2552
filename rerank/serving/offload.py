"""A large request's work off the event loop, without stalling the loop through the GIL.

The service parses and scores a large body on a worker thread so that ``/health`` and the
live watcher keep the event loop. But the threads share the GIL, and a 16 MiB batch builds
millions of objects: each of the cyclic garbage collector's full passes over them holds
the GIL for a fifth of a second, and the loop waits that long. Request objects (JSON
dicts, lists, strings; the answers) form no reference cycles, so reference counting frees
them anyway: :func:`run_off_loop` pauses the cyclic collector while any large request is
worked on, and lets it run as before once none is (cycles made meanwhile are collected then).
"""
from __future__ import annotations

import gc
import threading
from typing import Callable, TypeVar

import anyio

T = TypeVar("T")


class _CollectorPause:
    """Counts the large requests at work; the collector is off while there is one (and was on before the first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._active += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._was_enabled:
                gc.enable()


_pause = _CollectorPause()


def _paused(fn: Callable[[bytes], T], arg: bytes) -> T:
    with _pause:
        return fn(arg)


async def run_off_loop(fn: Callable[[bytes], T], arg: bytes, limiter: anyio.CapacityLimiter) -> T:
    """``fn(arg)`` on a worker thread (at most ``limiter``'s tokens at once), the cyclic collector paused meanwhile."""
    return await anyio.to_thread.run_sync(_paused, fn, arg, limiter=limiter)
