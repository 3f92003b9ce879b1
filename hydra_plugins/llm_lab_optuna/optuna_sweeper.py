"""A Hydra sweeper that searches hyperparameters with Optuna (Akiba et al. 2019, "Optuna").

``python train.py -m hparams_search=cbow_optuna`` runs ``hydra.sweeper.n_trials`` trials. Each
trial is one Hydra job: the sampler (TPE by default, Bergstra et al. 2011) proposes values for the
search space, the job trains with them as overrides, and the value ``train.py`` returns (the
``optimized_metric``) goes back to the study. Jobs report their validation metric as they train,
so the pruner can stop bad trials early (:mod:`llm_lab.callbacks.optuna_pruning`).

The study lives in a storage (``sqlite:///<sweep dir>/optuna.db`` unless ``storage`` is set), so
running the same command again resumes it: finished trials are kept, trials an interruption left
running are run again, and new trials are asked for until the study holds ``n_trials``.

The search space uses Hydra's override grammar, in ``hydra.sweeper.params`` or on the command line
(which wins for a key it names):

- ``choice(16, 32, 64)`` → categorical
- ``range(2, 8)`` / ``range(0.1, 0.5, 0.1)`` → int / float with a step (stop excluded, as in Python)
- ``interval(1e-4, 1e-2)`` → float; ``tag(log, interval(...))`` log-uniform;
  ``tag(int, interval(8, 128))`` integer (``tag(int, log, interval(...))`` both)
- a plain value → fixed for every trial
"""

# No `from __future__ import annotations` here: Hydra's plugin scanner runs this module before it
# is in sys.modules, and @dataclass then cannot resolve string annotations.
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import TrialState

from llm_lab.app.overrides import format_value
from llm_lab.errors import ConfigError
from llm_lab.optuna_trial import OPTUNA_KEY

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    """``hydra/sweeper=llm_lab_optuna``: every key below is ``hydra.sweeper.<key>``."""

    _target_: str = "hydra_plugins.llm_lab_optuna.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"  # minimize | maximize the value train.py returns
    study_name: str = "study"  # the study's name in its storage
    storage: str | None = None  # an Optuna storage URL (null: sqlite:///<sweep dir>/optuna.db)
    n_trials: int = 20  # trials the study should hold when the sweep ends (resumed ones count)
    n_jobs: int = 1  # trials launched together (parallel only with a parallel Hydra launcher)
    seed: int | None = None  # sampler seed (offset by the trials already run, so a resume differs)
    # A partial: the sweeper adds the seed. Any optuna.samplers class fits.
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "_partial_": True}
    )
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.NopPruner"})
    params: dict[str, Any] = field(default_factory=dict)  # config key -> search space (see above)


ConfigStore.instance().store(
    group="hydra/sweeper", name="llm_lab_optuna", node=OptunaSweeperConf, provider="llm_lab"
)


def _plain(value: Any) -> Any:
    return value.text if isinstance(value, QuotedString) else value


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override; None for a plain (fixed) value."""
    sweep, key = override.value(), f"hydra.sweeper.params.{override.key_or_group}"
    try:
        if isinstance(sweep, ChoiceSweep):
            return CategoricalDistribution([_plain(v) for v in sweep.list])
        if isinstance(sweep, RangeSweep):
            values = list(sweep.range())  # Hydra's range, like Python's, excludes stop
            if not values:
                raise ValueError(f"{override.input_line!r} is empty")
            if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
                return IntDistribution(values[0], values[-1], step=int(sweep.step))
            return FloatDistribution(values[0], values[-1], step=sweep.step)
        if isinstance(sweep, IntervalSweep):
            assert sweep.start is not None and sweep.end is not None
            log_scale = "log" in sweep.tags
            if "int" in sweep.tags:
                return IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
            return FloatDistribution(sweep.start, sweep.end, log=log_scale)
    except ValueError as err:  # Optuna's own checks: low > high, log of a non-positive bound...
        raise ConfigError(key, str(err), "fix the search space") from err
    if override.is_sweep_override():
        raise ConfigError(
            key, f"{override.input_line!r} is not a searchable space", "use choice/range/interval"
        )
    return None


def search_space(
    params: Mapping[str, Any], arguments: Sequence[str]
) -> tuple[list[str], dict[str, BaseDistribution]]:
    """Split ``hydra.sweeper.params`` and the command line into fixed overrides (kept as written)
    and a search space ``{override key: distribution}``; the command line wins for a shared key."""
    lines = [f"{k}={v if isinstance(v, str) else format_value(v)}" for k, v in params.items()]
    overrides: dict[str, Override] = {}
    for override in OverridesParser.create().parse_overrides([*lines, *arguments]):
        overrides.pop(override.key_or_group, None)  # keep the command line's order for its keys
        overrides[override.key_or_group] = override
    fixed, space = [], {}
    for override in overrides.values():
        dist = distribution(override)
        if dist is None:
            assert override.input_line is not None
            fixed.append(override.input_line)
        else:
            space[override.get_key_element()] = dist
    return fixed, space


def _consecutive(numbers: list[int]) -> list[list[int]]:
    """``[4, 5, 9]`` → ``[[4, 5], [9]]``: runs sharing one launch, so job num = trial number."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][-1] + 1 == n:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def user_key(config: DictConfig, name: str) -> str:
    """The key behind ``hydra.sweeper.<name>``: the one it interpolates (``${optimized_direction}``
    → ``optimized_direction``), else itself."""
    node = config.hydra.sweeper._get_node(name)
    raw = node._value() if node is not None else None
    match = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
    return match.group(1) if match else f"hydra.sweeper.{name}"


class OptunaSweeper(Sweeper):
    """Ask the study for trials, launch them as Hydra jobs, tell it their results."""

    def __init__(
        self,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        sampler: Callable[..., optuna.samplers.BaseSampler],
        pruner: optuna.pruners.BasePruner,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        # Checked in setup(), which has the config and so can name the key the user set.
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.sampler, self.pruner = sampler, pruner
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.check(config)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def check(self, config: DictConfig) -> None:
        """The sweeper's own settings, each refused under the key the user set: ``direction``
        comes from ``optimized_direction`` in conf/hparams_search/ (an interpolation)."""
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(
                user_key(config, "direction"),
                f"{self.direction!r} is not a direction",
                "use minimize or maximize",
            )
        for name in ("n_trials", "n_jobs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(user_key(config, name), f"{value!r} is not a count", "use 1 or more")
        if not config.get("optimized_metric"):
            raise ConfigError(
                "optimized_metric", "not set: a study needs a value to optimise", "e.g. val/loss"
            )

    def load_study(self, storage: str) -> optuna.Study:
        """Create the study, or load it to resume; the sampler's seed is offset by the trials
        already run so that a resumed random phase does not propose the same values again."""
        try:
            done = len(optuna.load_study(study_name=self.study_name, storage=storage).trials)
        except KeyError:  # no such study yet
            done = 0
        sampler = self.sampler() if self.seed is None else self.sampler(seed=self.seed + done)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler,
            pruner=self.pruner,
            direction=StudyDirection[self.direction.upper()],
            load_if_exists=True,
        )
        if study.direction != StudyDirection[self.direction.upper()]:
            raise ConfigError(
                "hydra.sweeper.direction",
                f"study {self.study_name!r} in {storage} is to {study.direction.name.lower()}",
                "keep its direction or pick a new hydra.sweeper.study_name",
            )
        return study

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        fixed, space = search_space(self.params, arguments)
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{(sweep_dir / 'optuna.db').resolve()}"
        study = self.load_study(storage)
        bookkeeping = [
            f"++{OPTUNA_KEY}.storage={format_value(storage)}",
            f"++{OPTUNA_KEY}.study={format_value(self.study_name)}",
        ]
        # Trials still RUNNING were cut off by an interruption: run them again with their values.
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        pending = {t.number: t.params for t in running}
        if pending:
            log.info(f"Resuming interrupted trials {sorted(pending)} of study {self.study_name!r}")
        returns = []
        while batch := self._next_batch(study, pending, space):
            for numbers in _consecutive(sorted(batch)):
                jobs = [
                    [*fixed, *(f"{k}={format_value(v)}" for k, v in batch[n].items()), *bookkeeping]
                    + [f"++{OPTUNA_KEY}.trial={n}"]
                    for n in numbers
                ]
                self.validate_batch_is_legal(jobs)
                returns.append(self._launch(study, numbers, jobs))
        if not returns:  # a finished study, run again: say why nothing ran, and how to go on
            held = len(study.trials)
            log.info(
                f"Study {self.study_name!r} holds {held} trials already, and hydra.sweeper.n_trials="
                f"{self.n_trials} asks for no more: no trial to run (raise hydra.sweeper.n_trials "
                f"above {held} to run more)"
            )
        self._log_best(study)
        return returns

    def _next_batch(
        self,
        study: optuna.Study,
        pending: dict[int, dict[str, Any]],
        space: dict[str, BaseDistribution],
    ) -> dict[int, dict[str, Any]]:
        """Up to ``n_jobs`` trials ``{number: params}``: interrupted ones first, then new ones
        asked from the sampler while the study holds fewer than ``n_trials``."""
        batch = {n: pending.pop(n) for n in list(pending)[: self.n_jobs]}
        while len(batch) < self.n_jobs and len(study.get_trials(deepcopy=False)) < self.n_trials:
            trial = study.ask(space)
            batch[trial.number] = trial.params
        return batch

    def _launch(self, study: optuna.Study, numbers: list[int], jobs: list[list[str]]) -> Sequence[JobReturn]:
        """Run trials as Hydra jobs numbered like the trials, then tell the study their results."""
        assert self.launcher is not None
        try:
            results = self.launcher.launch(jobs, initial_job_idx=numbers[0])
        except SystemExit as stop:
            # Exit code 2 is train.py's "bad config value": these trials failed. Any other exit
            # (Lightning turns Ctrl-C into exit code 1) leaves them RUNNING, to be resumed.
            if stop.code == 2:
                for n in numbers:
                    study.tell(n, state=TrialState.FAIL, skip_if_finished=True)
            raise
        for n, result in zip(numbers, results, strict=True):
            if result.status != JobStatus.COMPLETED:
                # An exception train.py does not turn into one line: a bug, shown whole. Accessing
                # return_value re-raises it, as Hydra's basic sweeper does.
                study.tell(n, state=TrialState.FAIL, skip_if_finished=True)
                _ = result.return_value
            if result.return_value is None:
                # train.py returns None from a job that stopped on a lab error (it printed the
                # error and left FAILED in the job's folder): the trial failed, the study goes on.
                study.tell(n, state=TrialState.FAIL, skip_if_finished=True)
                log.info(f"Trial {n} failed")
                continue
            # skip_if_finished: a pruned trial was told PRUNED by its own job already.
            trial = study.tell(n, float(result.return_value), skip_if_finished=True)
            log.info(f"Trial {n} {trial.state.name.lower()}: value={trial.value} {trial.params}")
        return results

    def _log_best(self, study: optuna.Study) -> None:
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = study.best_trial
            log.info(f"Best trial: #{best.number} value={best.value:.6g} {best.params}")
