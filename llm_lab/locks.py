"""One lock for every folder several processes share: the tokenizer cache, the prepared corpora and
a run folder.

It is a POSIX record lock (``fcntl.lockf``) on a small lock file: the system releases it when the
process ends, however it ends (``kill -9`` included), and processes forked by the holder (encoding
workers, data-loader workers) do not inherit it — a ``flock`` lock would stay held by the orphaned
workers of a killed parent, and every later run would wait for them. Its one rule: closing any file
opened on the lock file releases the lock, so only this module opens them.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def try_hold(path: Path) -> TextIO | None:
    """Take the lock of ``path`` without waiting: the open lock file (the lock lasts while it stays
    open), or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("a")
    try:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


@contextmanager
def exclusive(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``path`` for the ``with`` block, waiting for it if another process holds it
    (``on_wait`` is called once first, to say so): of several processes asking for the same cached
    result, the first makes it and the others wait, then find it made."""
    lock = try_hold(path)
    if lock is None:
        if on_wait is not None:
            on_wait()
        lock = path.open("a")
        fcntl.lockf(lock, fcntl.LOCK_EX)
    try:
        yield
    finally:
        lock.close()  # closing releases the lock
