"""Worker processes fed from a stream: jobs handed out lazily, a bounded number in flight.

Counting pre-tokens (``pretokenize.py``) and encoding a corpus (``llm_lab/data/prepare.py``) both
map a function over batches of a corpus that may not fit in memory. ``multiprocessing.Pool.imap``
does not bound that: its feeder thread pushes jobs into the pipe as fast as the pipe takes them,
and finished results wait in the parent for as long as the parent is slower than the workers.
:func:`imap_bounded` submits a job only when fewer than ``in_flight`` are pending, so memory holds
at most that many batches and results, whatever the corpus size.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from functools import partial
from itertools import chain, islice
from multiprocessing.pool import AsyncResult
from typing import Any, TypeVar

from llm_lab.errors import ArgumentError

Job = TypeVar("Job")
Result = TypeVar("Result")


def default_workers() -> int:
    """One worker per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def imap_bounded(
    func: Callable[[Job], Result],
    jobs: Iterable[Job],
    num_workers: int,
    in_flight: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Generator[Result, None, None]:
    """``map(func, jobs)`` in ``num_workers`` processes, results in the order of the jobs.

    At most ``in_flight`` jobs (default two per worker) are submitted and not yet consumed.
    With one worker, or a single job, everything runs in this process (``initializer`` too): a
    pool costs more to start than a small corpus takes. Workers are forked where that is safe
    (:func:`start_method`): spawning would re-import the caller's ``__main__`` (``train.py``
    imports torch), which costs seconds per worker. Closing the iterator early stops the workers.
    """
    jobs = iter(jobs)
    head = list(islice(jobs, 2))
    if num_workers <= 1 or len(head) < 2:
        if initializer is not None:
            initializer(*initargs)
        yield from map(func, chain(head, jobs))
        return
    limit = in_flight or 2 * num_workers
    method = start_method()
    context = mp.get_context(method)
    if method == "forkserver":
        # The server imports the job's modules once (torch among them), and every worker forked
        # from it has them: without this, each worker imports them again to unpickle its job.
        context.set_forkserver_preload(sorted({func.__module__, _start_worker.__module__}))
    start = partial(_start_worker, initializer, initargs)
    with context.Pool(num_workers, start) as pool:
        pending: deque[AsyncResult[Result]] = deque()
        for job in chain(head, jobs):
            pending.append(pool.apply_async(func, (job,)))
            if len(pending) >= limit:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def start_method() -> str:
    """``fork`` where the platform has it and this process runs one thread; else ``forkserver``
    (or ``spawn``). A fork copies only the thread that calls it: a lock another thread holds at
    that moment (a logger's writer thread, a database's) stays locked in the child forever, and a
    worker that needs it hangs at its first step. A fork server is a fresh one-thread process."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _start_worker(initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    # A forked worker inherits the parent's Python SIGTERM handler (train.py's, which ends a run
    # cleanly), and a Python handler cannot run while the worker waits in a lock for its next
    # job: the pool's terminate() would then wait for it forever. A worker just dies.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def document_batches(documents: Iterable[str], size: int, name: str) -> Iterator[list[str]]:
    """Consecutive documents in lists of about ``size`` characters, read lazily: the jobs of
    :func:`imap_bounded`. ``name`` is the argument that gave the documents, for the error when
    one is not a ``str``."""
    batch: list[str] = []
    chars = 0
    for doc in documents:
        if not isinstance(doc, str):
            raise ArgumentError(name, f"yields a {type(doc).__name__}, not str", "give documents as text")
        batch.append(doc)
        chars += len(doc)
        if chars >= size:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch
