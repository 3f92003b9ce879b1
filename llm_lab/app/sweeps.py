"""Sweeps (``python train.py -m ...``): one process per job, and a summary table at the end.

Two Hydra callbacks (``hydra.experimental.callback.Callback``), registered in
``conf/hydra/callbacks/sweeps.yaml``:

- :class:`SingleProcessSweeps` refuses a sweep whose jobs would start several processes
  (DDP and friends). Lightning starts the extra DDP ranks by re-running the command line, and that
  command line holds ``-m``: every rank would run the whole sweep again.
- :class:`SweepSummary` reads every job's ``metrics.json`` (written by ``train.py``) when the sweep
  ends and writes ``summary.md``, a markdown table of the swept overrides and the optimized metric,
  best first. It works for grid sweeps (Hydra's basic sweeper) and Optuna studies alike.

The Bayesian search itself lives in ``hydra_plugins/llm_lab_optuna`` (a Hydra sweeper plugin) and
its pruning callback in :mod:`llm_lab.callbacks.optuna_pruning`.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from llm_lab.app.overrides import command_word
from llm_lab.console import number
from llm_lab.errors import ConfigError, Refusal, refused
from llm_lab.hparams import varied_overrides
from llm_lab.optuna_trial import OPTUNA_KEY, PRUNED_MARKER

# Strategies that start one process per device (Lightning's names, and prefixes of their variants
# such as ``ddp_spawn`` or ``deepspeed_stage_2``).
MULTI_PROCESS_STRATEGIES = ("ddp", "fsdp", "deepspeed")
FAILED_MARKER = "FAILED"  # train.py writes it to a run directory when the run stops on a LabError
SWEEP_FIX = (
    "a sweep runs one process per job: drop -m to train one configuration with DDP, or sweep on one device"
)


def process_count(devices: Any, accelerator: Any = "auto") -> int | None:
    """How many processes ``lightning.Trainer(devices=..., accelerator=...)`` starts on one node;
    None when it means "every visible device", which may be several."""
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":
            return 1 if accelerator == "cpu" else None
        if "," in text:  # "0,1": a list of device ids
            return len([part for part in text.split(",") if part.strip()])
        devices = int(text)
    if isinstance(devices, Sequence):
        return len(devices)
    return None if devices == -1 else int(devices)


def check_single_process(trainer: Mapping[str, Any], key: str = "trainer") -> None:
    """Raise :class:`ConfigError` when a Trainer config would start more than one process."""
    strategy = trainer.get("strategy")
    if isinstance(strategy, Mapping):  # a strategy object: ``{_target_: ...DDPStrategy, ...}``
        strategy = str(strategy.get("_target_", "")).rsplit(".", 1)[-1]
    name = str(strategy or "").lower()
    if any(kind in name for kind in MULTI_PROCESS_STRATEGIES):
        raise ConfigError(
            f"{key}.strategy",
            f"{strategy!r} starts one process per device and each would run the whole sweep again",
            f"{SWEEP_FIX}, e.g. trainer=cpu",
        )
    count = process_count(trainer.get("devices", "auto"), trainer.get("accelerator", "auto"))
    if count is None or count > 1:
        shown = "every visible device" if count is None else f"{count} devices"
        raise ConfigError(
            f"{key}.devices",
            f"{trainer.get('devices')!r} ({shown}) starts one process per device in a sweep",
            f"{SWEEP_FIX}: {key}.devices=1",
        )
    if int(trainer.get("num_nodes", 1)) > 1:
        raise ConfigError(f"{key}.num_nodes", "several nodes start several processes", SWEEP_FIX)


def check_sweep_overrides(trainer: Mapping[str, Any], overrides: Sequence[str]) -> None:
    """Check every value a command-line sweep gives a Trainer key (``trainer.devices=1,2``), before
    any job runs. Sweeps over the ``trainer=`` group are caught when their job starts."""
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.is_sweep_override() and override.key_or_group == "experiment":
            # Each experiment has its own folder (outputs/<experiment>/multiruns/...), so the jobs
            # would scatter across them, and one summary could not rank a CBoW against a perceptron.
            raise ConfigError(
                "experiment",
                f"a sweep compares settings within one experiment, not {override.input_line}",
                "run one sweep per experiment",
            )
        if override.is_discrete_sweep() and override.key_or_group.startswith("trainer."):
            field = override.key_or_group.removeprefix("trainer.")
            for value in override.sweep_iterator():
                check_single_process({**trainer, field: value})


class SingleProcessSweeps(Callback):
    """Refuse ``-m`` with a multi-process Trainer: first on the composed config and the sweep's
    command line, then again on each job's own config (Optuna or group sweeps can change it)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with refused():
            check_single_process(config.trainer)
            check_sweep_overrides(config.trainer, list(config.hydra.overrides.task))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run may use DDP: Lightning re-runs a command line without -m
        with refused():
            check_single_process(config.trainer)


@dataclass
class SweepOutcome:
    """What the jobs of the sweep now running report about themselves. A job that stops on a lab
    error does not end the sweep (the next ones may be fine): ``train.py`` records it here, and
    once every job has run the command exits 2, naming how many failed and where the summary is.
    One process runs the jobs one after the other (Hydra's basic launcher), so a module-level
    record sees them all."""

    started: int = 0  # jobs that began
    failed: list[int] = field(default_factory=list)  # the numbers of those that failed
    sweep_dir: Path | None = None  # set when the sweep ends
    summary: Path | None = None  # summary.md, when one was written
    hydra: Any = None  # the Hydra config of the latest job (what unrun_jobs_line needs)
    objective: tuple[Any, Any] = (None, None)  # its optimized_metric and optimized_direction


OUTCOME = SweepOutcome()


def reset_outcome() -> None:
    """A fresh record, for a new command (tests run several in one process)."""
    global OUTCOME
    OUTCOME = SweepOutcome()


def job_label() -> str | None:
    """``job 1 (data.window=0)`` for a job of a sweep, None for a single run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    from hydra._internal.utils import get_args_parser

    hydra_cfg = HydraConfig.get()
    command_line = get_args_parser().parse_known_args()[0].overrides  # Hydra's own reading of argv
    swept = varied_overrides([str(o) for o in hydra_cfg.overrides.task], command_line)
    shown = [f"{o.split('=', 1)[0]}={_value(o.split('=', 1)[1])}" if "=" in o else o for o in swept]
    return f"job {hydra_cfg.job.num}" + (f" ({' '.join(shown)})" if shown else "")


def failed_jobs_line() -> str | None:
    """The last line of a sweep some of whose jobs failed, None when none did."""
    if not OUTCOME.failed:
        return None
    where = OUTCOME.summary or OUTCOME.sweep_dir or "sweep"
    numbers = ", ".join(map(str, OUTCOME.failed))
    jobs = "job" if len(OUTCOME.failed) == 1 else "jobs"
    return (
        f"error: {where}: {len(OUTCOME.failed)} of {OUTCOME.started} jobs failed ({jobs} {numbers}; "
        "each one's error is above and in the FAILED file of its folder)"
    )


def unrun_jobs_line(hydra_cfg: Any, shown: int = 10, started: bool = True) -> str | None:
    """After job ``hydra_cfg.job.num`` of a sweep was interrupted (the command stops there): the
    jobs that did not run (that one too when it had not ``started`` training: it has no checkpoint
    to resume), and the commands that run them. An Optuna study resumes itself."""
    import shlex

    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser

    command_line = get_args_parser().parse_known_args()[0].overrides
    script = sys.argv[0]
    if not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        again = " ".join(shlex.quote(w) for w in ["python", script, "-m", *command_line])
        return f"the sweep stopped at job {hydra_cfg.job.num}; run the same command to go on:\n  {again}"
    # The basic sweeper's own expansion of its params and the command line: the same job order.
    params = hydra_cfg.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()]
    lines += [o for o in command_line if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)[0]
    first = hydra_cfg.job.num + (1 if started else 0)
    left = jobs[first:]
    if not left:
        return None
    # Each into the folder the sweep would have given it (<sweep dir>/<job number>, the default),
    # so that the sweep folder holds them all.
    subdir = hydra_cfg.sweep._get_node("subdir")
    sweep_dir = Path(hydra_cfg.runtime.output_dir).parent
    if sweep_dir.is_relative_to(Path.cwd()):
        sweep_dir = sweep_dir.relative_to(Path.cwd())
    numbered = subdir is not None and subdir._value() == "${hydra.job.num}"
    commands = [
        " ".join(
            [
                *(shlex.quote(w) for w in ["python", script, *job]),
                *([command_word("hydra.run.dir", str(sweep_dir / str(n)))] if numbered else []),
            ]
        )
        for n, job in enumerate(left[:shown], start=first)
    ]
    more = [f"  ... and {len(left) - shown} more"] if len(left) > shown else []
    which = f"job {first}" if len(left) == 1 else f"jobs {first}-{first + len(left) - 1}"
    return "\n".join(
        [
            f"the sweep stopped: {which} of {len(jobs)} did not run; run each with"
            " (or the whole sweep again):",
            *(f"  {c}" for c in commands),
            *more,
        ]
    )


@dataclass
class JobResult:
    """One job of a sweep as found on disk: its overrides, its metric and how it ended."""

    name: str  # the job directory, relative to the sweep directory
    overrides: dict[str, str]
    value: float | None  # the optimized metric (None: no metrics.json or no such metric)
    status: str  # "" (finished), "pruned", "failed" or "unfinished" (no metrics.json)


def _parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``["+model.x=3", "seed=1"]`` → ``{"model.x": "3", "seed": "1"}``, minus the trial bookkeeping
    the Optuna sweeper adds (``++optuna.trial=...``), which is not a hyperparameter."""
    parsed = {}
    for line in lines:
        key, _, value = line.partition("=")
        key = key.lstrip("+~")
        if key != OPTUNA_KEY and not key.startswith(f"{OPTUNA_KEY}."):
            parsed[key] = value
    return parsed


def read_jobs(sweep_dir: Path, metric: str, output_subdir: str = ".hydra") -> list[JobResult]:
    """Every job below ``sweep_dir``: each directory holding ``<output_subdir>/overrides.yaml``."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob(f"**/{output_subdir}/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file))
        assert isinstance(overrides, list)
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        status = next(
            (name.lower() for name in (PRUNED_MARKER, FAILED_MARKER) if (job_dir / name).is_file()),
            "",
        )
        value = metrics.get(metric)
        jobs.append(
            JobResult(
                name=str(job_dir.relative_to(sweep_dir)),
                overrides=_parse_overrides([str(line) for line in overrides]),
                value=None if value is None else float(value),
                status=status if status or metrics_file.is_file() else "unfinished",
            )
        )
    return jobs


def rank(jobs: list[JobResult], direction: str = "minimize") -> list[JobResult]:
    """Best first: finished jobs by the metric, then pruned ones, then failed ones; NaN is worst."""
    if direction not in ("minimize", "maximize"):
        raise ConfigError(
            "hydra.sweeper.direction", f"{direction!r} is not a direction", "minimize or maximize"
        )
    sign = 1.0 if direction == "minimize" else -1.0

    def key(job: JobResult) -> tuple[int, int, float]:
        group = {"": 0, "pruned": 1}.get(job.status, 2)
        if job.value is None or math.isnan(job.value):
            return group, 1, 0.0
        return group, 0, sign * job.value

    return sorted(jobs, key=key)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def _value(text: str) -> str:
    """An override's value as a cell: a value as typed on a grid's command line stays as it is; a
    long float an Optuna sampler drew (``0.0012345678901234567``) is cut to 4 significant digits."""
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.4g}" if len(text) > 8 and not text.lstrip("-").isdigit() else text


def summary_table(jobs: list[JobResult], metric: str, direction: str = "minimize") -> str:
    """A markdown table: one row per job, best first; the columns are the overrides that differ
    between jobs (all overrides when every job has the same ones)."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    swept = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1] or keys
    header = ["rank", "job", *swept, metric, "status"]
    lines = [
        f"# Sweep summary: {metric} ({direction}), best first",
        "",
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---:" if h in ("rank", metric) else "---" for h in header) + "|",
    ]
    for i, job in enumerate(rank(jobs, direction), start=1):
        value = "" if job.value is None else number(job.value)
        row = [i, job.name, *(_value(job.overrides.get(k, "")) for k in swept), value, job.status]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Write ``summary.md`` to the sweep directory when a sweep ends, and print it.

    ``direction`` (minimize|maximize) defaults to the config's ``optimized_direction``, then to the
    sweeper's own ``direction`` when it has one (the Optuna sweeper does), else ``minimize``.
    """

    def __init__(self, direction: str | None = None, filename: str = "summary.md") -> None:
        self.direction = direction
        self.filename = filename

    def _direction(self, config: DictConfig) -> tuple[str, str]:
        """The direction and the key it was set by."""
        for key, value in (
            ("hydra.callbacks.sweep_summary.direction", self.direction),
            ("optimized_direction", config.get("optimized_direction")),
            ("hydra.sweeper.direction", OmegaConf.select(config, "hydra.sweeper.direction")),
        ):
            if value:
                return str(value), key
        return "minimize", "optimized_direction"

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Checked before any job: at the end, Hydra would turn the error into a mere warning and
        # the sweep would end without its summary.
        direction, key = self._direction(config)
        if direction not in ("minimize", "maximize"):
            raise Refusal(ConfigError(key, f"{direction!r} is not a direction", "use minimize or maximize"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        OUTCOME.sweep_dir = Path(config.hydra.sweep.dir)
        self.write(config)

    def write(self, config: DictConfig) -> None:
        """Rank the jobs found in the sweep directory so far, write the table and print it
        (nothing without an ``optimized_metric``, or before any job)."""
        metric = config.get("optimized_metric")
        if not metric:
            return
        direction, _ = self._direction(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_jobs(sweep_dir, metric, config.hydra.output_subdir or ".hydra")
        if not jobs:
            return
        table = summary_table(jobs, metric, str(direction))
        (sweep_dir / self.filename).write_text(table)
        OUTCOME.summary = sweep_dir / self.filename
        print(f"\n{table}\nwritten to {sweep_dir / self.filename}")


def refresh_summary(run_dir: Path, metric: str | None, direction: str | None) -> Path | None:
    """After a single run that finished in a sweep's folder (a job run by the command the
    interrupted sweep printed): that sweep's ``summary.md`` rebuilt from its jobs as they are now,
    and its path; None when the run's folder is not a job of a sweep with a summary."""
    summary = run_dir.parent / "summary.md"
    if not metric or not summary.is_file():
        return None
    jobs = read_jobs(run_dir.parent, metric)
    summary.write_text(summary_table(jobs, metric, direction or "minimize"))
    return summary


def finished_earlier(output_dir: Path, metric: str | None) -> float | None | bool:
    """A grid sweep's job whose folder holds the results of a finished run (the same sweep command
    run again, to complete it): its optimized metric (None without one); False when it must run."""
    metrics_file = output_dir / "metrics.json"
    if not metrics_file.is_file() or (output_dir / FAILED_MARKER).is_file():
        return False
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    value = metrics.get(metric) if metric and isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) else None


def same_sweep(sweep_dir: Path, task: Sequence[str]) -> bool:
    """Whether ``sweep_dir`` holds a grid sweep of the same command-line overrides (its
    ``multirun.yaml``, which Hydra writes when a sweep starts): running it again completes it."""
    try:
        earlier = OmegaConf.load(sweep_dir / "multirun.yaml")
        return list(OmegaConf.select(earlier, "hydra.overrides.task") or []) == list(task)
    except (OSError, ValueError):
        return False


def summary_so_far() -> None:
    """At an interrupted sweep (no ``on_multirun_end`` comes): ``summary.md`` of the jobs run so
    far, the one cut off listed as unfinished, from the latest job's record in :data:`OUTCOME`;
    nothing when the summary callback is off (``hydra/callbacks=null``)."""
    hydra_cfg = OUTCOME.hydra
    node = (hydra_cfg.get("callbacks") or {}).get("sweep_summary") if hydra_cfg is not None else None
    if node is None:
        return
    metric, direction = OUTCOME.objective
    config = OmegaConf.create(
        {
            "optimized_metric": metric,
            "optimized_direction": direction,
            "hydra": {
                "sweep": {"dir": str(hydra_cfg.sweep.dir)},
                "sweeper": {"direction": OmegaConf.select(hydra_cfg, "sweeper.direction")},
                "output_subdir": hydra_cfg.output_subdir,
            },
        }
    )
    SweepSummary(node.get("direction"), node.get("filename", "summary.md")).write(config)
