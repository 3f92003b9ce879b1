"""What a run prints: the lab's and Lightning's log lines, once, in the console and in ``train.log``.

Lightning gives its loggers a handler of their own when it is imported before logging is configured
(as ``train.py`` imports it before Hydra sets logging up), so its lines never reach the run's
``train.log``; here they are handed back to the root logger that Hydra configured
(``conf/hydra/default.yaml``). Advertisements and notices about the lab's own choices are
dropped, and so are the warnings a user cannot act on (each listed below with why); every other
warning goes to the log like any line.

The console is for the lab's own lines (progress, metrics, where things are) and the warnings a
user can act on: Lightning's routine notices (LOG_FILE_ONLY) stay in ``train.log`` alone, where
someone reading the run folder later still finds them.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import warnings
from typing import TextIO

from tqdm import tqdm

# (message pattern, why it is not the user's to act on)
SILENCED_WARNINGS = [
    (".*does not have many workers.*", "the lab's datasets live in memory: workers would only copy them"),
    (".*IterableDataset.*has `__len__` defined.*", "CBoW's batches are built in the main process"),
    (".*LeafSpec.*", "a deprecation inside Lightning's use of torch's pytree"),
    (".*module\\(s\\) in eval mode at the start of training.*", "DPO's frozen reference stays in eval mode"),
]


# (start of a Lightning info line, why it is dropped)
SILENCED_LINES = [
    ("💡", "advertisements for other products"),
    ("Trainer already configured with model summary", "the lab configures its own summary on purpose"),
]

# (pattern searched in a log line, why the console does without it): train.log keeps these lines.
LOG_FILE_ONLY = [
    (
        r"^(GPU|TPU|HPU) available: ",
        "the devices the config asked for; an unused GPU still warns ('GPU available but not used')",
    ),
    (r"^`Trainer\(\w+=1\.0\)` was configured so ", "restates Lightning's default: the whole epoch"),
    (r"^Loading `train_dataloader` to estimate number of stepping batches", "a step inside Lightning"),
    (r"^Seed set to ", "the seed is in the run's config (.hydra/config.yaml)"),
    (r"^Restoring states from the checkpoint path at ", "'Restored all states from ...' follows"),
    (r"^`Trainer\.fit` stopped: ", "the run's own limit (max_steps, max_epochs, max_time) was reached"),
    (
        r"is smaller than the logging interval Trainer\(log_every_n_steps=",
        "it counts one epoch's batches, but logging counts the run's steps: the progress callback"
        " warns when the whole run logs nothing (llm_lab/callbacks/progress.py)",
    ),
    (
        r"Checkpoint directory .* exists and is not empty",
        "a resumed run finds its own checkpoints there, and a new run is refused a folder with"
        " checkpoints before it starts (llm_lab/run_dir.py, claim)",
    ),
    (
        r"The dirpath has changed from .* therefore `best_model_score`",
        "a run resumed into a new folder: the lab keeps no best-k checkpoints, only the newest ones",
    ),
]

# ``extra=`` of a record the console has shown already (see :func:`print_and_log`).
LOG_FILE_ONLY_RECORD = {"console": False}


class Silence(logging.Filter):
    """Drop the Lightning lines listed in SILENCED_LINES."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(tuple(start for start, _why in SILENCED_LINES))


_sweep: list[str | None] = [None]  # the folder of the sweep this process runs; None for a single run


def in_sweep(folder: str | None) -> None:
    """Tell the console which sweep the job now starting belongs to (the shell does, per job): its
    jobs run one after another in this process, and a warning is shown once per sweep."""
    _sweep[0] = folder


class ConsoleOnly(logging.Filter):
    """Pass what belongs on the console: not the LOG_FILE_ONLY lines, nor the records marked
    LOG_FILE_ONLY_RECORD, nor a warning a job of the same sweep has shown already (every job of
    a grid on the built-in corpus finds the same too-small vocabulary: said once, not 4 times;
    each job's train.log still has it)."""

    patterns = [re.compile(pattern) for pattern, _why in LOG_FILE_ONLY]
    # (sweep folder, warnings shown in it): Hydra makes a new handler for every job of a sweep.
    shown: tuple[str | None, set[str]] = (None, set())

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        message = record.getMessage()
        if any(p.search(message) for p in self.patterns):
            return False
        if record.levelno >= logging.WARNING and (sweep := _sweep[0]) is not None:
            if ConsoleOnly.shown[0] != sweep:
                ConsoleOnly.shown = (sweep, set())
            if message in ConsoleOnly.shown[1]:
                return False
            ConsoleOnly.shown[1].add(message)
        return True


class ConsoleHandler(logging.StreamHandler):
    """The console's handler (``conf/hydra/default.yaml``): lines as they are, without the ones
    :class:`ConsoleOnly` leaves to ``train.log``. While a progress bar is live, a line is written
    the way ``tqdm.write`` does it: the bars are cleared, the line written, the bars drawn again
    below it; a plain write would land in the middle of the bar's line and break both."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self.addFilter(ConsoleOnly())

    def emit(self, record: logging.LogRecord) -> None:
        with tqdm.external_write_mode(file=self.stream):
            super().emit(record)


def number(value: float) -> str:
    """A metric as the console shows it: 4 significant digits, in one notation for the magnitudes a
    run meets (``6355``, ``10290``, ``4.159``, ``0.008499``); ``%g`` would switch to an exponent at
    10 000 (``1.029e+04``) in the middle of a column of throughputs. Beyond 1e6 or below 1e-4 the
    exponent is the shorter way to read it."""
    if not math.isfinite(value):
        return str(value)
    rounded = float(f"{value:.4g}")
    if rounded == 0:
        return "0"
    if not 1e-4 <= abs(rounded) < 1e6:
        return f"{value:.4g}"
    # As many decimals as the 4 significant digits need; trailing zeros say nothing and go.
    decimals = max(0, 3 - math.floor(math.log10(abs(rounded))))
    text = f"{rounded:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# Characters that act on a terminal rather than show: C0 and C1 controls (ESC starts the sequences
# that move the cursor, clear the screen, retitle the window), DEL, and the bidirectional overrides
# that make text read in another order than it is. Newline and tab stay: they are the text's layout.
_ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escaped(text: str) -> str:
    """``text`` with every character that would act on a terminal written as its escape
    (``\\x1b``, ``\\u202e``): shown, not obeyed."""
    return _ACTING.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def for_terminal(text: str, stream: TextIO) -> str:
    """``text`` :func:`escaped` when ``stream`` is a terminal; as it is for a file or a pipe,
    where the raw text is what the user keeps."""
    return escaped(text) if stream.isatty() else text


def print_and_log(message: str, level: int = logging.ERROR) -> None:
    """``message`` on stderr, where a command's last words belong (the console handler writes to
    stdout), and in the run's ``train.log``, so that the run folder says why the run stopped. A
    message quotes values the user gave (a prompt, a path): their control characters are shown
    escaped, not obeyed by the terminal."""
    message = escaped(message)
    print(message, file=sys.stderr, flush=True)
    logging.getLogger("train").log(level, message, extra=LOG_FILE_ONLY_RECORD)


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
    # Capture anew: when a run ends inside warnings.catch_warnings() (a test, a notebook), leaving it
    # gives warnings their printing back, while logging still counts itself as capturing them.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
