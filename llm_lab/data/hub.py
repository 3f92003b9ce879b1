"""Hugging Face datasets, read the one way every stage reads them.

A name is either a folder that ``datasets`` wrote (``save_to_disk``: works offline, and is how the
tests exercise every hub path) or a hub id. Before a hub id is asked for, the hub's host is tried
for a few seconds: offline, ``datasets`` would retry for about 30 s before failing, and the lab says
it at once, in one line, with what to do instead.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from llm_lab.errors import ArgumentError, DataError

OFFLINE_FIX = (
    "connect to the internet, or use a folder that datasets saved (save_to_disk); a dataset already "
    "in the local cache loads with HF_HUB_OFFLINE=1"
)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reads_offline(name: str) -> bool:
    """Whether ``datasets`` reads ``name`` without the hub: a folder, or one of its own builders
    (``text``, ``json``, ``csv``, ``parquet``...), or the hub is off by the user's own setting."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    offline = any(
        os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    return offline or Path(name).expanduser().is_dir() or name in _PACKAGED_DATASETS_MODULES


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a connection to the hub's host opens within ``timeout`` seconds."""
    url = urllib.parse.urlsplit(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def check_reachable(name: str, arg: str, fix: str = OFFLINE_FIX) -> None:
    """Refuse a hub id at once when the hub cannot be reached (``arg``: the argument it came in)."""
    if not reads_offline(name) and not hub_reachable():
        raise ArgumentError(
            arg, f"{name!r} is a hub dataset, and the hub ({hub_endpoint()}) cannot be reached", fix
        )


def load_split(name: str, split: str, config: str | None = None, arg: str = "hf_dataset") -> Any:
    """The ``split`` of the dataset ``name`` (a saved folder or a hub id), as a ``datasets.Dataset``."""
    import datasets

    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except FileNotFoundError:
            raise DataError(f"{folder}: not a folder that datasets saved (no dataset_info.json)") from None
        if not isinstance(loaded, datasets.DatasetDict):
            return loaded
        if split not in loaded:
            raise DataError(f"{folder}: no split {split!r} (its splits: {', '.join(loaded)})")
        return loaded[split]
    check_reachable(name, arg)
    try:
        return datasets.load_dataset(name, config, split=split)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        raise DataError(
            f"{name}: not a readable Hugging Face dataset with a {split!r} split ({err})"
        ) from None
