"""Ordered, bounded background work: decode and resize the next images while the model runs on this one."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from os2d.io import ImageError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Prepared(Generic[T, R]):
    """The outcome of preparing one item: ``value`` or ``error`` (the message of an image error)."""

    item: T
    value: R | None
    error: str | None
    seconds: float  # time spent preparing it (in the worker)


def _prepare(fn: Callable[[T], R], item: T) -> Prepared[T, R]:
    t0 = time.perf_counter()
    try:
        value, error = fn(item), None
    except (ImageError, OSError) as e:  # a bad image is a result, not a failure of the run
        value, error = None, str(e)
    return Prepared(item, value, error, time.perf_counter() - t0)


def prefetched(items: Iterable[T], fn: Callable[[T], R], *, workers: int = 2,
               depth: int = 4) -> Iterator[Prepared[T, R]]:
    """``fn(item)`` for every item, computed ahead by ``workers`` threads, yielded in the input order.

    At most ``depth`` items are prepared or waiting ahead of the consumer (bounded memory: ``depth`` decoded
    images). ``workers=0`` prepares each item in the caller's thread when it is needed (the simple path).
    Threads suit image decoding and resizing: Pillow and the tensor conversion release the GIL.
    Image errors (:class:`os2d.io.ImageError`, ``OSError``) become ``Prepared.error``; other exceptions
    propagate from the item that raised them. Closing the iterator early cancels the work not yet started.
    """
    if workers < 0 or depth < 1:
        raise ValueError(f"workers must be >= 0 and depth >= 1, got workers={workers}, depth={depth}")
    if workers == 0:
        for item in items:
            yield _prepare(fn, item)
        return
    it = iter(items)
    pending: deque[Future[Prepared[T, R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="os2d-prefetch")
    try:
        for item in it:
            pending.append(pool.submit(_prepare, fn, item))
            if len(pending) >= depth:
                break
        while pending:
            done = pending.popleft().result()
            for item in it:  # keep the window full: one new item per item handed out
                pending.append(pool.submit(_prepare, fn, item))
                break
            yield done
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
