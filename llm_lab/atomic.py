"""Files the lab replaces whole (checkpoints, exported weights, cached tokenizers, metrics): written
to a temporary file in the same folder, then renamed over the old one, so that a reader or a crash
sees the old content or the new one, never half of it.

The file keeps the mode ``open()`` gives any new file: 0666 less the umask (or what the folder's
default ACL says). Neither ``tempfile.mkstemp`` (0600: it is meant to be private) nor safetensors'
``save_file`` (0600 too) does, and a rename keeps the mode: a checkpoint the user's group could not
read, unlike every other file of the run. So the temporary file is created as ``open()`` would, its
mode noted, and given back to the file once the writer is done with it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _new_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file ``.<name>.<random>.tmp`` beside ``path`` (so that the rename stays on one
    filesystem, where it is atomic), created as ``open()`` creates files: its descriptor and path."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # another writer drew the same name: draw again
            continue


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """``with replacing(path) as tmp:`` write the new content to ``tmp``; when the block ends
    without an error, ``tmp`` becomes ``path`` in one atomic rename, with the mode of a file the
    user creates. On an error ``path`` is untouched and ``tmp`` removed."""
    path = Path(path)
    fd, tmp = _new_temporary(path)
    mode = os.fstat(fd).st_mode & 0o7777
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)  # the writer may have made a file of its own in its place
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
