"""What a run prints: the lab's and Lightning's log lines, once, in the console and in ``train.log``.

Lightning gives its loggers a handler of their own when it is imported before logging is configured
(as ``train.py`` imports it before Hydra sets logging up), so its lines never reach the run's
``train.log``; here they are handed back to the root logger that Hydra configured
(``conf/hydra/default.yaml``). Advertisements and notices about the lab's own choices are
dropped, and so are the warnings a user cannot act on (each listed below with why); every other
warning goes to the log like any line.
"""

from __future__ import annotations

import logging
import warnings

# (message pattern, why it is not the user's to act on)
SILENCED_WARNINGS = [
    (".*does not have many workers.*", "the lab's datasets live in memory: workers would only copy them"),
    (".*IterableDataset.*has `__len__` defined.*", "CBoW's batches are built in the main process"),
    (".*LeafSpec.*", "a deprecation inside Lightning's use of torch's pytree"),
]


# (start of a Lightning info line, why it is dropped)
SILENCED_LINES = [
    ("💡", "advertisements for other products"),
    ("Trainer already configured with model summary", "the lab configures its own summary on purpose"),
]


class Silence(logging.Filter):
    """Drop the Lightning lines listed in SILENCED_LINES."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(tuple(start for start, _why in SILENCED_LINES))


def configure_console() -> None:
    """Route Lightning's logging through the root logger, capture warnings, drop the noise."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, Silence) for f in rank_zero.filters):
        rank_zero.addFilter(Silence())
    for pattern, _why in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logging.captureWarnings(True)
