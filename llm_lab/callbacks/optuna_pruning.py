"""Stop unpromising Optuna trials early (Akiba et al. 2019, "Optuna", §3.2 pruning).

After every validation the job reports its monitored metric to its trial (an intermediate value at
the current optimizer step); the study's pruner compares it with what other trials reported at the
same step (e.g. the median stopping rule of Golovin et al. 2017, "Google Vizier", §3.2.2) and
answers ``trial.should_prune()``. A pruned trial stops training, is marked PRUNED in the study and
leaves a ``PRUNED`` file in its run directory, so that sweep summaries tell it from finished runs.

The Optuna sweeper (``hydra_plugins/llm_lab_optuna``) runs each trial as a Hydra job and tells it
which trial it is with three overrides: ``++optuna.storage=... ++optuna.study=...
++optuna.trial=N``; :meth:`OptunaPruning.from_storage` reloads that trial from the storage.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import optuna
from optuna.trial import TrialState

from llm_lab.errors import ConfigError
from llm_lab.optuna_trial import OPTUNA_KEY, PRUNED_MARKER


class OptunaPruning(L.Callback):
    """Report ``monitor`` to an Optuna trial after each validation; stop the run when it is pruned.

    With ``trial=None`` (a run that is not an Optuna trial) the callback does nothing, so an
    ``hparams_search`` config can list it unconditionally.
    """

    def __init__(self, trial: optuna.trial.Trial | None, monitor: str = "val/loss") -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned = False

    @classmethod
    def from_storage(
        cls,
        monitor: str = "val/loss",
        storage: str | None = None,
        study: str | None = None,
        trial: int | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> OptunaPruning:
        """Reload trial number ``trial`` of study ``study`` from ``storage`` (an Optuna storage URL,
        e.g. ``sqlite:///path/optuna.db``); with ``trial=None``, an inactive callback.

        A storage keeps trials, not the pruner: ``pruner`` must be the sweeper's own (Optuna's
        default, a MedianPruner, would silently take its place)."""
        if trial is None:
            return cls(None, monitor)
        if storage is None or study is None:
            raise ConfigError(
                f"{OPTUNA_KEY}.storage",
                "a trial number without its storage and study",
                "run via -m",
            )
        loaded = optuna.load_study(study_name=study, storage=storage, pruner=pruner)
        matches = [t for t in loaded.get_trials(deepcopy=False) if t.number == trial]
        if not matches or matches[0].state != TrialState.RUNNING:
            raise ConfigError(
                f"{OPTUNA_KEY}.trial", f"study {study!r} has no running trial {trial}", "run via -m"
            )
        # Optuna has no public call to attach to a trial another process asked for: Trial(study,
        # trial_id) is what its own optimize loop does, and the id is exposed only as _trial_id.
        return cls(optuna.trial.Trial(loaded, matches[0]._trial_id), monitor)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None or self.pruned or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ConfigError(
                "optimized_metric",
                f"{self.monitor!r} is not logged during validation: trials cannot be pruned on it",
                f"optimise a validation metric, one of {sorted(trainer.callback_metrics)}",
            )
        step = trainer.global_step
        self.trial.report(float(value), step)
        if not self.trial.should_prune():
            return
        # Stop cleanly rather than raise: the run still writes its metrics and TensorBoard hparams,
        # so dashboards show pruned runs too; the sweeper sees the trial is finished already.
        self.pruned = True
        trainer.should_stop = True
        self.trial.study.tell(self.trial, state=TrialState.PRUNED)
        message = f"trial {self.trial.number} pruned at step {step}: {self.monitor}={float(value):.6g}"
        Path(trainer.default_root_dir, PRUNED_MARKER).write_text(message + "\n")
