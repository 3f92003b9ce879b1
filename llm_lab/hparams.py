"""What TensorBoard's HParams tab shows of a run: the view that answers "which setting won?".

TensorBoard's HParams plugin reads three records (``tensorboard.plugins.hparams``): an *experiment*
that names the columns (hyperparameters, then metrics), and per run a *session start* holding the
run's values and its trial name, and a *session end*. The lab writes all three itself, because the
plugin's defaults hide the story: without an experiment it makes a column of every value of every
run, sorted by name, and shows the first five (``data``, ``data/batch_size``, ``data/hf_config``…);
it shows the first five metrics in the order given; and it names a trial by its run's folder,
which the table cuts to ``cbow/multiruns…``.

So the experiment lists

- first the keys the sweep varied (marked ``differs``, which the plugin sorts first),
- then a short set of what tells runs of a stage apart (:data:`HEADLINE_KEYS`: model size,
  learning rate, batch, tokenizer), leaving out the keys a run does not set (``None``);

the metrics start with the optimized one, then the losses and the stage's validation and test
scores; and a trial is named by what it varied (``dim=64,lr=3e-3``: the Trial ID column shows
about 15 characters), a single run by its folder. Each run's session holds every plain value of
its config, so a column another run's experiment asks for still finds its value.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

from llm_lab.config import plain
from llm_lab.optuna_trial import OPTUNA_KEY

# The config groups whose plain values a run is compared by (callbacks, paths, logger are not).
GROUPS = ("corpus", "data", "tokenizer", "model", "optimizer", "scheduler", "trainer", "stage")

# What tells runs of one stage apart: how big a model, how fast it learns, on what batches, with
# which tokens (five at most: the HParams tab ticks five columns). Of each tuple the first key a
# run sets is shown (a GPT's size preset, a CBoW's embedding width, an MLP's hidden layers, ...).
# The experiment's name is in every run's values, not a column: compare one stage at a time.
HEADLINE_KEYS: tuple[tuple[str, ...], ...] = (
    ("model.net.size", "model.embed_dim", "model.net.d_model", "model.net.n_embd", "model.net.hidden_sizes"),
    ("optimizer.lr",),
    ("data.batch_size",),
    ("tokenizer",),
    ("tokenizer.vocab_size",),
)

Value = float | str | bool


@dataclass
class HParamsRecord:
    """One run as the HParams tab shows it (see :func:`hparams_record`)."""

    trial: str  # the name in the Trial ID column
    values: dict[str, Value]  # every plain setting of the run, by its config key
    varied: list[str] = field(default_factory=list)  # the keys the sweep varied (first columns)
    columns: list[str] = field(default_factory=list)  # the varied keys, then the headline ones


def override_key(override: str) -> str:
    """``model.embed_dim`` of ``model.embed_dim=64`` (or of ``+model.embed_dim=64``)."""
    return override.split("=", 1)[0].lstrip("+~")


def varied_overrides(job_overrides: Sequence[str], command_line: Sequence[str]) -> list[str]:
    """Of a sweep job's overrides (Hydra's ``overrides.task``), those that tell it from the other
    jobs: the keys the command line sweeps (``model.embed_dim=32,64``) or does not set at all (an
    Optuna search space), not those it gives every job one value (``test=false``, which Hydra
    hands the job as ``test=False``), nor the Optuna sweeper's trial number."""
    fixed = {
        override.key_or_group
        for override in OverridesParser.create().parse_overrides(list(command_line))
        if not override.is_sweep_override()
    }
    return [
        o
        for o in job_overrides
        if override_key(o) not in fixed and override_key(o).split(".")[0] != OPTUNA_KEY
    ]


def short_number(text: str) -> str:
    """A fraction in its shortest spelling to 4 significant digits (``0.003`` → ``3e-3``,
    ``0.0125`` as it is, an Optuna draw ``0.000123456`` → ``1.235e-4``); anything else as it is.
    The HParams table gives a trial's name about 20 characters."""
    try:
        value = float(text)
    except ValueError:
        return text
    if value == 0 or value.is_integer() or not math.isfinite(value):
        return text
    mantissa, exponent = f"{value:.3e}".split("e")
    scientific = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return min(text, f"{value:.4g}", scientific, key=len)


def _labels(keys: Sequence[str], shorter: bool) -> list[str]:
    """Each key by its last part (``embed_dim``), or with ``shorter`` by that part's last word
    (``dim``), unless two keys would share a label: then the longer one, then the whole key."""
    tries = [[k.rsplit(".", 1)[-1].rsplit("_", 1)[-1] for k in keys]] if shorter else []
    tries += [[k.rsplit(".", 1)[-1] for k in keys], list(keys)]
    return [next(t[i] for t in tries if t.count(t[i]) == 1) for i in range(len(keys))]


def trial_name(overrides: Sequence[str], shorter: bool = False) -> str:
    """The name of a sweep's trial: what it varied (``model.embed_dim=64 optimizer.lr=0.003`` →
    ``embed_dim=64,lr=3e-3``), the name of the folder TensorBoard calls the run (so a ``/`` in a
    value becomes ``_``). ``shorter`` (``dim=64,lr=3e-3``) fits the HParams table's Trial ID
    column, which shows about 15 characters; its other columns name each key in full."""
    labels = _labels([override_key(o) for o in overrides], shorter)
    values = [short_number(o.split("=", 1)[1]) if "=" in o else "null" for o in overrides]
    return ",".join(f"{label}={value}" for label, value in zip(labels, values, strict=True)).replace("/", "_")


def run_label(folder: str) -> str:
    """A single run's name in the Trial ID column: its folder's name, a dated one (Hydra's
    ``2026-12-07_13-21-00``) as ``12-07 13:21:00``, the part that tells one day's runs apart
    within the 15 characters the column shows."""
    dated = re.fullmatch(r"\d{4}-(\d\d-\d\d)_(\d\d)-(\d\d)-(\d\d)(_\d+)?", folder)
    if dated is None:
        return folder
    day, hours, minutes, seconds, again = dated.groups()
    return f"{day} {hours}:{minutes}:{seconds}{again or ''}"


def leaves(tree: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """``("model.net.n_layer", 4)`` for every leaf of a nested dict, by its config key."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), tree


def _plain_value(value: Any) -> Value | None:
    """A value the plugin stores (number, string, bool); None stays out of the record."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def hparams_record(
    cfg: DictConfig,
    overrides: Sequence[str] = (),
    choices: Mapping[str, Any] | None = None,
    net: Any = None,
    run_name: str = "",
) -> HParamsRecord:
    """The run's record: ``overrides`` are those that tell this job of a sweep from the others
    (Hydra's task overrides less what the command line gave every job; none for a single run),
    ``choices`` the option picked in each config group (Hydra's ``runtime.choices``). A net with a
    dataclass ``config`` (GPT) gives the values it was built with: ``size=lab-small`` leaves
    ``n_layer`` null in the config, the dashboard still shows 4."""
    values: dict[str, Value] = {}
    for group, choice in (choices or {}).items():
        if group in ("experiment", *GROUPS) and choice is not None:
            values[group] = str(choice)
    values["seed"] = cfg.get("seed")
    for group in GROUPS:
        for key, value in leaves(plain(cfg.get(group)), f"{group}."):
            if not key.rsplit(".", 1)[-1].startswith("_"):  # _target_, _partial_: how it is built
                values[key] = value
    built = getattr(net, "config", None)
    if is_dataclass(built) and not isinstance(built, type):
        values.update({f"model.net.{key}": value for key, value in asdict(built).items()})
    values = {k: v for k, v in ((k, _plain_value(v)) for k, v in values.items()) if v is not None}
    varied = [override_key(o) for o in overrides]
    for override in overrides:  # a group's option (model=llama) or a value of a node Hydra left as typed
        values.setdefault(override_key(override), override.split("=", 1)[1] if "=" in override else "")
    headline = [next((k for k in keys if k in values), None) for keys in HEADLINE_KEYS]
    columns = varied + [k for k in headline if k is not None and k not in varied]
    return HParamsRecord(
        trial_name(overrides, shorter=True) if overrides else run_label(run_name), values, varied, columns
    )


def headline_metrics(metrics: Sequence[str], optimized: str | None) -> list[str]:
    """The metrics the HParams tab lists, in its order: the optimized one, the losses (train, val,
    test), then the other validation and test scores; not the learning rate, the throughput or an
    evaluation's coverage, which say how a run went rather than which setting won."""
    splits = ("train", "val", "test")

    def rank(name: str) -> tuple[int, int, str]:
        split, _, quantity = name.partition("/")
        if name == optimized:
            return 0, 0, name
        if quantity == "loss":
            return 1, splits.index(split) if split in splits else len(splits), name
        return 2, 0, name

    def headline(name: str) -> bool:
        split, _, quantity = name.partition("/")
        return (
            name == optimized
            or quantity == "loss"
            or (split in splits[1:] and not quantity.endswith("coverage"))
        )

    return sorted(filter(headline, metrics), key=rank)


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    """A summary holding one HParams plugin record, as the plugin's own writers make it."""
    summary = Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary


def _data_type(value: Value) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    return api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, int | float) else api_pb2.DATA_TYPE_STRING


def hparams_summaries(
    record: HParamsRecord, metrics: Sequence[str], optimized: str | None, tag: Callable[[str], str]
) -> list[Summary]:
    """The experiment, session-start and session-end records of a finished run. ``metrics`` are
    the names of the metrics it logged, ``tag(name)`` the scalar tag each curve has in TensorBoard
    (the HParams tab shows the last point of that curve, under the metric's name)."""
    hparam_infos = [
        api_pb2.HParamInfo(
            name=key, display_name=key, type=_data_type(record.values[key]), differs=key in record.varied
        )
        for key in record.columns
        if key in record.values
    ]
    metric_infos = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag(name)), display_name=name)
        for name in headline_metrics(metrics, optimized)
    ]
    experiment = api_pb2.Experiment(
        hparam_infos=hparam_infos, metric_infos=metric_infos, time_created_secs=time.time()
    )
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return [
        _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        summary_v2.hparams_pb(record.values, trial_id=record.trial),
        _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ]
