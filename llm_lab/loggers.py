"""Lightning's loggers as the lab uses them: TensorBoard with one HParams record per run that does
not hide the curves, and a metrics.csv that a resumed run continues."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from llm_lab.atomic import replacing
from llm_lab.errors import DataError
from llm_lab.hparams import HParamsRecord, hparams_summaries

# What Markdown reads as markup in a table cell (TensorBoard's Text tab renders Markdown).
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def markdown_cell(text: str) -> str:
    """``text`` shown as it is in a cell of a Markdown table: ``__main__`` would be a bold
    "main", a ``|`` would end the cell, ``<b>`` would be dropped as HTML."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKUP.sub(r"\\\1", text).replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table of ``rows`` under ``header``, every cell shown as it is (:func:`markdown_cell`)."""
    lines = [header, ["---"] * len(header), *rows]
    cells = [[markdown_cell(str(c)) if i != 1 else str(c) for c in line] for i, line in enumerate(lines)]
    return "\n".join("| " + " | ".join(line) + " |" for line in cells)


# Metric quantities whose curves share a group of their own: how fast a run trains, not what it learns.
THROUGHPUT = ("tokens_per_sec", "words_per_sec", "mfu")


def dashboard_tag(name: str) -> str | None:
    """The tag a metric's curve has in TensorBoard, or None for a series the dashboard does without.

    TensorBoard groups curves by the part of a tag before its first ``/`` and opens its first two
    groups in name order (Time Series and Scalars alike). The lab's metrics are named by split
    (``val/loss``), which would open on ``lr`` and ``test``; here the losses become one group
    ``loss/train``, ``loss/val``, ``loss/test`` (first by name, before ``lr/<optimizer>``), and
    throughput and MFU another (``throughput/``). Lightning's ``epoch`` counter, a staircase
    beside every run, goes: the step axis says the same. The evaluation callback's
    ``eval/<task>/<metric>`` (:mod:`llm_lab.callbacks.evaluation`) would open first (``eval`` sorts
    before ``loss``): its curves are the group ``tasks/<task>/<metric>``, after the losses.
    """
    if name == "epoch":
        return None
    split, _, quantity = name.partition("/")
    if split == "eval":
        return f"tasks/{quantity}"
    if quantity == "loss":
        return f"loss/{split}"
    if quantity in THROUGHPUT:
        return f"throughput/{quantity}"
    return name


class LabTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger writing the tags of :func:`dashboard_tag`, and a run's HParams
    record (:meth:`log_hparams_record`) naming exactly the metrics that have a curve.

    TensorBoard's HParams view shows, for each metric of a record, the last point of that metric's
    curve in the run; writing the final values again (as ``log_hyperparams(params, metrics)`` does,
    at step 0) would put a second point under the same tag and hide the curve in the default view.
    TensorBoard names a run by its folder below ``--logdir``: a trial of a sweep writes into a
    folder named by what it varied (:meth:`name_trial`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tags: dict[str, str] = {}  # metric name → its curve's tag, for every metric logged

    def name_trial(self, trial: str) -> None:
        """Write into ``<run>/tensorboard/<trial>`` (e.g. ``embed_dim=64,lr=0.003``), the name
        TensorBoard then shows for the run; called before anything is written."""
        if self._experiment is not None:
            raise RuntimeError("name_trial is called before the logger writes")
        self._version = trial

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/<version>`` as written: Lightning's expands ``$VAR`` and ``~`` in it,
        and a run folder whose name holds ``$HOME`` got its events written into another folder."""
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        log_dir = os.path.join(self.root_dir, version)
        return os.path.join(log_dir, self.sub_dir) if isinstance(self.sub_dir, str) else log_dir

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        tags = {name: tag for name in metrics if (tag := dashboard_tag(name)) is not None}
        super().log_metrics({tag: metrics[name] for name, tag in tags.items()}, step)
        self.tags.update(tags)

    def log_hparams_record(self, record: HParamsRecord, optimized_metric: str | None) -> None:
        """The run's HParams record (see ``llm_lab.hparams``), with every logged metric."""
        writer = self.experiment._get_file_writer()
        for summary in hparams_summaries(record, sorted(self.tags), optimized_metric, self.tags.__getitem__):
            writer.add_summary(summary)
        writer.flush()

    @rank_zero_only
    def save(self) -> None:
        # Lightning's save also writes hparams.yaml of the module's save_hyperparameters(), which
        # the lab's modules do not call: an empty {} beside the events. The run's config is in .hydra/.
        self.experiment.flush()


def read_metrics_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The columns and the ``(step, row)`` of a ``metrics.csv`` that CSVLogger wrote, or a DataError
    naming the file (and the way to start it anew)."""
    fix = "move it out of the run folder to start a new one"
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable metrics.csv, {err} ({fix})") from None
    if "step" not in columns:
        raise DataError(f"{path}: no step column, so not a metrics.csv of CSVLogger ({fix})")
    if rows and None in rows[-1].values():  # a last line cut short: the run was killed mid-write
        rows.pop()
    steps = []
    for line, row in enumerate(rows, start=2):
        try:
            steps.append((int(float(row["step"])), row))
        except (TypeError, ValueError):
            raise DataError(f"{path}:{line}: step {row['step']!r} is not a number ({fix})") from None
    return columns, steps


# Columns of metrics.csv that say when a row was logged, not what was measured.
_WHEN = ("step", "epoch")


class ContinuedMetricsWriter(ExperimentWriter):
    """Lightning's metrics.csv writer that keeps the rows already in the file.

    Lightning deletes an existing metrics.csv when its logger starts, so a run resumed into its own
    folder (``ckpt_path=<run>``) would lose the curves of everything before the checkpoint. Here the
    earlier rows are read (and checked) at the start and kept, except where the resumed run logs
    the same thing again: a run killed some steps after its last checkpoint logged steps that the
    resumed run trains and logs once more. So when the first new rows are written, the earlier rows
    after the first new step go, and at that step those measuring a metric the new rows measure
    too (the final validation of a run that is then extended stays). No step and metric is ever
    in the file twice. A run that failed before its first checkpoint starts again at step 0: its
    rows are replaced, as Lightning's writer would.
    """

    earlier: tuple[list[str], list[tuple[int, dict[str, str]]]] | None  # the file's rows, until kept

    def _check_log_dir_exists(self) -> None:
        # Called by Lightning's __init__, where it deletes the file.
        path = Path(self.metrics_file_path)
        self.earlier = read_metrics_csv(path) if path.is_file() else None

    def save(self) -> None:
        if self.metrics and self.earlier is not None:
            columns, rows = self.earlier
            first = min(int(row["step"]) for row in self.metrics)
            measured = {key for row in self.metrics if int(row["step"]) == first for key in row}

            def kept(step: int, row: dict[str, str]) -> bool:
                logged = {key for key, value in row.items() if value and key not in _WHEN}
                return step < first or (step == first and not logged & measured)

            self.metrics_keys = sorted(columns)  # Lightning's order: the new rows are appended in it
            with replacing(self.metrics_file_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(row for step, row in rows if kept(step, row))
            self.earlier = None
        super().save()


class LabCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing through :class:`ContinuedMetricsWriter`: a resumed run
    appends to its metrics.csv instead of replacing it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedMetricsWriter(log_dir=self.log_dir)
        return self._experiment
