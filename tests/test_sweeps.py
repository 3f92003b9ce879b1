"""Sweeps: grid runs with a summary, the Optuna sweeper (search space, persistent study, pruning),
the refusal of multi-process sweeps and TensorBoard's HParams data for every job."""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pytest
import torch
from conftest import ROOT, run_train
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.llm_lab_optuna.optuna_sweeper import OptunaSweeper, search_space
from llm_lab.app.overrides import format_value
from llm_lab.app.sweeps import (
    SingleProcessSweeps,
    check_single_process,
    check_sweep_overrides,
    rank,
    read_jobs,
    summary_table,
)
from llm_lab.callbacks.optuna_pruning import OptunaPruning
from llm_lab.errors import ConfigError, Refusal
from llm_lab.optuna_trial import PRUNED_MARKER

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A CBoW run small enough for a test: 20 documents, tiny vectors, no word-vector evaluation.
TINY = [
    "experiment=cbow",
    "corpus.max_documents=20",
    "model.embed_dim=8",
    "logger=tensorboard",
    "model.similarity_file=null",
    "model.analogy_file=null",
    "callbacks.embedding_report=null",
    "callbacks.model_checkpoint=null",
]


# ---------------------------------------------------------------------------------------------
# Refusing sweeps whose jobs would start several processes


@pytest.mark.parametrize("strategy", ["auto", "ddp", "ddp_spawn"])
@pytest.mark.parametrize("devices", [1, 2, "1", "3", "auto"])
def test_refusal_agrees_with_lightning_on_cpu(strategy: str, devices: Any):
    """Refused exactly when Lightning would run several processes or a DDP strategy."""
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False)
    multi = trainer.world_size > 1 or isinstance(trainer.strategy, L.pytorch.strategies.DDPStrategy)
    cfg = {"accelerator": "cpu", "devices": devices, "strategy": strategy}
    if multi:
        with pytest.raises(ConfigError) as err:
            check_single_process(cfg)
        assert err.value.key in ("trainer.strategy", "trainer.devices")
    else:
        check_single_process(cfg)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"accelerator": "gpu", "devices": -1}, "trainer.devices"),
        ({"accelerator": "gpu", "devices": "auto"}, "trainer.devices"),
        ({"accelerator": "gpu", "devices": [0, 1]}, "trainer.devices"),
        ({"accelerator": "gpu", "devices": "0,1"}, "trainer.devices"),
        ({"accelerator": "gpu", "devices": 1, "strategy": "fsdp"}, "trainer.strategy"),
        (
            {"devices": 1, "strategy": {"_target_": "lightning.pytorch.strategies.DDPStrategy"}},
            "trainer.strategy",
        ),
        ({"accelerator": "cpu", "devices": 1, "num_nodes": 2}, "trainer.num_nodes"),
    ],
)
def test_refusal_of_gpu_and_node_configs(cfg: dict[str, Any], key: str):
    with pytest.raises(ConfigError) as err:
        check_single_process(cfg)
    assert err.value.key == key and "-m" in str(err.value)


def test_swept_trainer_values_are_checked_before_any_job():
    trainer = {"accelerator": "cpu", "devices": 1}
    check_sweep_overrides(trainer, ["trainer.max_epochs=1,2", "trainer.devices=1"])
    with pytest.raises(ConfigError, match="trainer.devices"):
        check_sweep_overrides(trainer, ["model.embed_dim=8,16", "trainer.devices=1,2"])


def test_job_check_refuses_ddp_in_a_multirun_only():
    """The refusal is a Refusal (a BaseException): Hydra would turn an Exception into a warning."""

    def job_config(mode: RunMode) -> Any:
        return OmegaConf.create({"hydra": {"mode": mode}, "trainer": {"devices": 1, "strategy": "ddp"}})

    SingleProcessSweeps().on_job_start(job_config(RunMode.RUN), task_function=print)  # DDP is fine
    with pytest.raises(Refusal) as refusal:
        SingleProcessSweeps().on_job_start(job_config(RunMode.MULTIRUN), task_function=print)
    assert isinstance(refusal.value.error, ConfigError) and refusal.value.error.key == "trainer.strategy"


def sweep_callback_targets() -> set[str]:
    """The Hydra callbacks train.py's config registers (conf/hydra/default.yaml)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=cbow"], return_hydra_config=True)
    return {str(c["_target_"]) for c in cfg.hydra.callbacks.values()}


def test_train_config_registers_the_sweep_callbacks():
    expected = {"llm_lab.app.sweeps.SingleProcessSweeps", "llm_lab.app.sweeps.SweepSummary"}
    assert expected <= sweep_callback_targets(), "conf/hydra/default.yaml: override callbacks: sweeps"


def test_cli_refuses_a_sweep_with_ddp(tmp_path: Path):
    # Without the refusal in place this command would start a real DDP sweep: check it first.
    test_train_config_registers_the_sweep_callbacks()
    sweep = tmp_path / "sweep"
    proc = run_train("-m", "experiment=cbow", "trainer=ddp_cpu", f"hydra.sweep.dir={sweep}", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trainer.strategy:"), proc.stderr
    assert "drop -m" in lines[0]
    assert not sweep.exists()  # refused before any job started


# ---------------------------------------------------------------------------------------------
# The summary table


def _fake_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None, marker: str = "") -> None:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if marker:
        (job / marker).write_text("stopped\n")


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_summary_ranks_jobs_best_first(tmp_path: Path, direction: str):
    values = {"0": 2.5, "1": 1.5, "2": float("nan"), "3": 3.5}
    for name, value in values.items():
        _fake_job(
            tmp_path,
            name,
            ["experiment=cbow", f"model.embed_dim={name}", "++optuna.trial=1"],
            {"val/loss": value, "train/loss": 0.0},
        )
    _fake_job(tmp_path, "4", ["experiment=cbow", "model.embed_dim=4"], {"val/loss": 0.1}, PRUNED_MARKER)
    _fake_job(tmp_path, "5", ["experiment=cbow", "model.embed_dim=5"], None, "FAILED")
    jobs = rank(read_jobs(tmp_path, "val/loss"), direction)
    finite = sorted(
        (n for n, v in values.items() if not math.isnan(v)),
        key=values.__getitem__,
        reverse=direction == "maximize",
    )
    assert [j.name for j in jobs] == [*finite, "2", "4", "5"]
    assert [j.status for j in jobs][-2:] == ["pruned", "failed"]
    table = summary_table(read_jobs(tmp_path, "val/loss"), "val/loss", direction).splitlines()
    assert table[2] == "| rank | job | model.embed_dim | val/loss | status |"  # optuna.* is bookkeeping
    assert table[4].startswith(f"| 1 | {finite[0]} | {finite[0]} | ")


def test_summary_shortens_sampled_floats_only(tmp_path: Path):
    """An Optuna trial's drawn value is cut to 4 significant digits; what a person typed stays."""
    typed = ["experiment=cbow", "optimizer.lr=3e-3", "data.subsample=0.001", "model.embed_dim=100000000"]
    _fake_job(tmp_path, "0", typed, {"val/loss": 1.0})
    drawn = ["experiment=cbow", "optimizer.lr=0.0012345678901234567", "data.subsample=1e-05"]
    _fake_job(tmp_path, "1", [*drawn, "model.embed_dim=16"], {"val/loss": 2.0})
    rows = summary_table(read_jobs(tmp_path, "val/loss"), "val/loss").splitlines()[4:]
    assert rows[0] == "| 1 | 0 | 3e-3 | 0.001 | 100000000 | 1 |  |"
    assert rows[1] == "| 2 | 1 | 0.001235 | 1e-05 | 16 | 2 |  |"


def test_grid_sweep_writes_one_dir_per_job_a_summary_and_hparams(tmp_path: Path):
    proc = run_train(
        "-m",
        *TINY[:2],
        "model.embed_dim=8,16",
        *TINY[3:],
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.sweep.dir={tmp_path}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {}
    for job in ("0", "1"):
        overrides = OmegaConf.load(tmp_path / job / ".hydra" / "overrides.yaml")
        embed_dim = next(str(o) for o in overrides if str(o).startswith("model.embed_dim="))
        jobs[embed_dim.split("=")[1]] = json.loads((tmp_path / job / "metrics.json").read_text())["val/loss"]
        # TensorBoard names the run by its folder: the trial's, named by what it varied.
        trial = tmp_path / job / "tensorboard" / embed_dim.removeprefix("model.")
        hparams, metric_tags, scalars = _hparams(trial)
        assert hparams["model.embed_dim"] == float(embed_dim.split("=")[1])
        assert hparams["experiment"] == "cbow" and "loss/val" in metric_tags  # val/loss's curve
        assert math.isclose(scalars["loss/val"], jobs[embed_dim.split("=")[1]], rel_tol=1e-6)
    assert set(jobs) == {"8", "16"}
    best_first = sorted(jobs, key=jobs.__getitem__)
    rows = [line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split("|")[3].strip() for row in rows[1:]] == best_first
    assert "| rank | job | model.embed_dim | val/loss |" in rows[0]
    assert "Sweep summary" in proc.stdout


def test_a_job_that_fails_on_a_bad_value_is_named_and_the_sweep_goes_on(tmp_path: Path):
    proc = run_train("-m", *TINY, "debug=fast", "data.window=0,2", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, proc.stderr[-3000:]
    assert errors[0].startswith("error: job 0 (data.window=0): data.window: ")
    assert errors[1].startswith(f"error: {tmp_path / 'summary.md'}: 1 of 2 jobs failed (job 0; ")
    assert (tmp_path / "0" / "FAILED").read_text().startswith("data.window: ")
    assert not (tmp_path / "0" / "metrics.json").exists()
    assert (tmp_path / "1" / "metrics.json").is_file() and not (tmp_path / "1" / "FAILED").exists()
    rows = [line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[1].split("|")[2:4] == [" 1 ", " 2 "] and rows[1].rstrip().endswith("|  |")
    assert rows[2].split("|")[2:4] == [" 0 ", " 0 "] and rows[2].rstrip().endswith("| failed |")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials"),
        ("hydra.sweeper.n_trials=-3", "hydra.sweeper.n_trials"),
        ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs"),
        ("optimized_direction=up", "optimized_direction"),  # hydra.sweeper.direction takes it
        ("optimized_metric=null", "optimized_metric"),
        ("hydra.sweeper.pruner.n_startup_trials=-1", "hydra.sweeper.pruner"),  # Optuna's refusal
        ("hydra.sweeper.sampler._target_=optuna.samplers.Nope", "hydra.sweeper.sampler"),
    ],
)
def test_a_bad_optuna_setting_is_one_line_naming_its_key(tmp_path: Path, override: str, key: str):
    proc = run_train(
        "-m", "experiment=cbow", "hparams_search=cbow_optuna", override, f"hydra.sweep.dir={tmp_path}"
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), proc.stderr[-3000:]
    assert not (tmp_path / "optuna.db").exists()


def test_a_misspelt_optimized_metric_or_monitor_is_refused_before_the_first_step(tmp_path: Path):
    """From the metric names the stage declares (CBoWModule.LOGGED and its callbacks'), not when
    the run ends: nothing is trained, one line per key, with the closest name."""
    for key in ("optimized_metric", "+callbacks.model_checkpoint.monitor"):
        run = tmp_path / key
        proc = run_train(*TINY, f"{key}=val/lose", "progress_every_n_steps=1", f"hydra.run.dir={run}")
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.strip().splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {key.lstrip('+')}: 'val/lose'"), errors
        assert "did you mean val/loss?" in errors[0]
        assert "step 1/" not in proc.stdout and not (run / "checkpoints").exists()
        assert (run / "FAILED").is_file() and not (run / "metrics.json").exists()


def test_a_test_metric_without_the_test_stage_is_refused_before_training(tmp_path: Path):
    proc = run_train(*TINY, "test=false", "optimized_metric=test/loss", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: optimized_metric: test/loss is logged by the test stage, and test=false runs none "
        "(add test=true, or optimize a val/ metric)"
    )
    assert "step 1/" not in proc.stdout and not (tmp_path / "checkpoints").exists()


def test_optuna_trials_with_a_misspelt_metric_fail_one_by_one_and_the_command_exits_2(tmp_path: Path):
    proc = run_train(
        "-m",
        *TINY,
        "hparams_search=cbow_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "optimized_metric=val/lose",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    for n in (0, 1):  # each trial was refused before it trained, and said which it was
        assert errors[n].startswith(f"error: job {n} (")
        assert (
            "optimized_metric: 'val/lose' is not a metric this stage logs (did you mean val/loss?"
            in errors[n]
        )
    assert errors[2].startswith(f"error: {tmp_path / 'summary.md'}: 2 of 2 jobs failed (jobs 0, 1; ")
    study = optuna.load_study(study_name="cbow", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert (tmp_path / "summary.md").read_text().count("| failed |") == 2


def test_a_grid_sweep_with_a_bad_direction_is_refused_before_any_job(tmp_path: Path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "seed=1,2", "optimized_direction=up", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: optimized_direction: 'up' is not a direction (use minimize or maximize)"
    ]
    assert not sweep.exists()


def _hparams(event_dir: Path) -> tuple[dict[str, Any], set[str], dict[str, float]]:
    """The HParams plugin's data in a run's event files: hyperparameters, metric tags, and the
    value HParams shows for each metric (the last point of that metric's curve)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    hparams: dict[str, Any] = {}
    metric_tags: set[str] = set()
    for blob in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(blob)
        for name, value in data.session_start_info.hparams.items():
            hparams[name] = getattr(value, value.WhichOneof("kind"))
        metric_tags |= {m.name.tag for m in data.experiment.metric_infos}
    scalars = {t: acc.Scalars(t)[-1].value for t in metric_tags}
    return hparams, metric_tags, scalars


# ---------------------------------------------------------------------------------------------
# The Optuna sweeper: search space, values on the command line, a persistent resumable study


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("choice(8, 16, 32)", CategoricalDistribution([8, 16, 32])),
        ("choice(adamw, 'sgd')", CategoricalDistribution(["adamw", "sgd"])),
        ("range(2, 8)", IntDistribution(2, 7)),
        ("range(8, 65, 8)", IntDistribution(8, 64, step=8)),
        ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("interval(0.1, 0.9)", FloatDistribution(0.1, 0.9)),
        ("tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("tag(int, interval(8, 128))", IntDistribution(8, 128)),
        ("tag(int, log, interval(8, 128))", IntDistribution(8, 128, log=True)),
    ],
)
def test_search_space_grammar_maps_to_optuna_distributions(text: str, expected: Any):
    fixed, space = search_space({"model.x": text}, [])
    assert fixed == [] and space == {"model.x": expected}


def test_command_line_overrides_the_configured_space():
    params = {"model.embed_dim": "choice(8, 16)", "optimizer.lr": "interval(0.1, 0.2)", "seed": 3}
    fixed, space = search_space(params, ["model.embed_dim=32", "+data.window=range(2,4)"])
    assert fixed == ["seed=3", "model.embed_dim=32"]
    assert space == {
        "optimizer.lr": FloatDistribution(0.1, 0.2),
        "+data.window": IntDistribution(2, 3),
    }


@pytest.mark.parametrize("text", ["interval(5, 1)", "tag(log, interval(0, 1))", "range(5, 1)"])
def test_an_impossible_space_names_its_key(text: str):
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.params\.model\.x"):
        search_space({"model.x": text}, [])


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=12)
)


@settings(max_examples=150, deadline=None)
@given(SCALARS)
@example("/tmp/my lab's/runs\\")  # a folder name typed into a resume hint or a sweep's hydra.sweep.dir
@example("./outputs/a,b=c")
@example(".5")
def test_format_value_round_trips_through_hydras_parser(value: Any):
    parsed = OverridesParser.create().parse_override(f"key={format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


class FakeLauncher:
    """Runs ``objective(params)`` for each job instead of train.py, and remembers what it ran."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.launched: list[tuple[int, list[str]]] = []

    def launch(self, jobs: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        results = []
        for i, overrides in enumerate(jobs):
            self.launched.append((initial_job_idx + i, list(overrides)))
            params = {o.split("=")[0].lstrip("+"): o.split("=", 1)[1] for o in overrides}
            result = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
            try:
                result.return_value = self.objective(params)
            except Exception as err:  # as Hydra's run_job: the job failed, the sweep goes on
                result.return_value, result.status = err, JobStatus.FAILED
            results.append(result)
        return results


def _sweeper(tmp_path: Path, launcher: FakeLauncher, n_trials: int, **kwargs: Any) -> OptunaSweeper:
    sweeper = OptunaSweeper(
        direction="minimize",
        study_name="s",
        storage=None,
        n_trials=n_trials,
        n_jobs=kwargs.pop("n_jobs", 1),
        seed=0,
        sampler=partial(optuna.samplers.RandomSampler),
        pruner=optuna.pruners.NopPruner(),
        params={"x": "tag(int, interval(0, 10))", "y": "choice(a, b)"},
    )
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.launcher = launcher  # type: ignore[assignment]
    sweeper.validate_batch_is_legal = lambda batch: None  # type: ignore[method-assign]
    return sweeper


def _load(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def objective(params: dict[str, str]) -> float:
    return (int(params["x"]) - 3) ** 2 + (params["y"] == "b")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_study_persists_and_resumes_where_it_stopped(
    tmp_path: Path, n_jobs: int, caplog: pytest.LogCaptureFixture
):
    first = FakeLauncher(objective)
    _sweeper(tmp_path, first, n_trials=3, n_jobs=n_jobs).sweep(["z=1"])
    before = {t.number: t.datetime_complete for t in _load(tmp_path).trials}
    assert [n for n, _ in first.launched] == [0, 1, 2]  # job number = trial number

    # An interruption leaves trial 3 RUNNING, its values already sampled.
    interrupted = _load(tmp_path).ask(
        search_space({"x": "tag(int, interval(0, 10))", "y": "choice(a, b)"}, [])[1]
    )
    second = FakeLauncher(objective)
    _sweeper(tmp_path, second, n_trials=5, n_jobs=n_jobs).sweep(["z=1"])

    study = _load(tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert {t.number: t.datetime_complete for t in study.trials[:3]} == before  # not redone
    assert [n for n, _ in second.launched] == [3, 4]
    resumed = second.launched[0][1]
    assert f"x={interrupted.params['x']}" in resumed and f"y={interrupted.params['y']}" in resumed
    for trial in study.trials:  # each trial's value is the objective of the values it was run with
        assert trial.value == objective({"x": str(trial.params["x"]), "y": trial.params["y"]})
    for number, overrides in first.launched + second.launched:
        assert "z=1" in overrides and f"++optuna.trial={number}" in overrides

    # Run again as it stands, the finished study runs nothing and says how to go on.
    third = FakeLauncher(objective)
    with caplog.at_level(logging.INFO):
        _sweeper(tmp_path, third, n_trials=5, n_jobs=n_jobs).sweep(["z=1"])
    assert third.launched == [] and len(_load(tmp_path).trials) == 5
    assert "holds 5 trials already" in caplog.text and "raise hydra.sweeper.n_trials" in caplog.text


def test_pruned_and_failed_jobs_are_recorded(tmp_path: Path):
    def job(params: dict[str, str]) -> float:
        if params["optuna.trial"] == "1":  # as OptunaPruning does from inside the job
            study = optuna.load_study(study_name="s", storage=params["optuna.storage"].strip("'"))
            study.tell(1, state=TrialState.PRUNED)
        if params["optuna.trial"] == "2":
            raise RuntimeError("diverged")
        return 1.0

    with pytest.raises(RuntimeError, match="diverged"):
        _sweeper(tmp_path, FakeLauncher(job), n_trials=4).sweep([])
    assert [t.state for t in _load(tmp_path).trials] == [
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.FAIL,
    ]


def test_a_trial_that_failed_on_a_lab_error_is_told_failed_and_the_study_goes_on(tmp_path: Path):
    def job(params: dict[str, str]) -> float | None:
        return None if params["optuna.trial"] == "1" else 1.0  # train.py: a job's lab error

    launcher = FakeLauncher(job)
    _sweeper(tmp_path, launcher, n_trials=3).sweep([])
    assert [n for n, _ in launcher.launched] == [0, 1, 2]
    assert [t.state for t in _load(tmp_path).trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]


@pytest.mark.parametrize(("code", "state"), [(2, TrialState.FAIL), (1, TrialState.RUNNING)])
def test_a_config_error_fails_the_trial_but_an_interruption_leaves_it_to_resume(
    tmp_path: Path, code: int, state: TrialState
):
    def job(params: dict[str, str]) -> float:
        raise SystemExit(code)  # train.py exits 2 on a LabError; Lightning exits 1 on Ctrl-C

    with pytest.raises(SystemExit):
        _sweeper(tmp_path, FakeLauncher(job), n_trials=2).sweep([])
    assert [t.state for t in _load(tmp_path).trials] == [state]


# ---------------------------------------------------------------------------------------------
# Pruning inside a job


class Regression(L.LightningModule):
    """y = 2x by a linear layer: a loss that validation can report."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.data = torch.linspace(-1, 1, 32).unsqueeze(1)

    def step(self) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.layer(self.data), 2 * self.data)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.step()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self.step())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4)), batch_size=1)

    val_dataloader = train_dataloader


def _fit(tmp_path: Path, callback: L.Callback, max_epochs: int = 3) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(Regression())
    return trainer


@pytest.mark.parametrize("pruner", [optuna.pruners.ThresholdPruner(upper=0.0), optuna.pruners.NopPruner()])
def test_pruning_stops_the_trainer_and_marks_the_trial(tmp_path: Path, pruner: optuna.pruners.BasePruner):
    study = optuna.create_study(pruner=pruner)  # in memory
    trial = study.ask()
    trainer = _fit(tmp_path, OptunaPruning(trial, monitor="val/loss"))
    reported = study.trials[0].intermediate_values
    if isinstance(pruner, optuna.pruners.ThresholdPruner):  # any loss > 0 is pruned at once
        assert trainer.current_epoch == 1 and trainer.global_step == 4
        assert study.trials[0].state == TrialState.PRUNED and list(reported) == [4]
        assert math.isclose(reported[4], float(trainer.callback_metrics["val/loss"]), rel_tol=1e-6)
        assert (tmp_path / PRUNED_MARKER).read_text().startswith("trial 0 pruned at step 4")
    else:
        assert trainer.current_epoch == 3 and list(reported) == [4, 8, 12]
        assert study.trials[0].state == TrialState.RUNNING  # the sweeper tells the final value
        assert not (tmp_path / PRUNED_MARKER).exists()


def test_pruning_callback_reloads_its_trial_from_storage(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="s", storage=storage).ask()
    pruner = optuna.pruners.ThresholdPruner(upper=0.0)
    _fit(
        tmp_path,
        OptunaPruning.from_storage("val/loss", storage=storage, study="s", trial=0, pruner=pruner),
    )
    assert _load(tmp_path).trials[0].state == TrialState.PRUNED
    with pytest.raises(ConfigError, match="optuna.trial"):
        OptunaPruning.from_storage("val/loss", storage=storage, study="s", trial=0)  # finished
    inactive = OptunaPruning.from_storage("val/loss")  # not an Optuna trial: does nothing
    assert _fit(tmp_path, inactive, max_epochs=2).current_epoch == 2


def test_pruning_on_a_metric_validation_does_not_log_is_a_config_error(tmp_path: Path):
    trial = optuna.create_study().ask()
    with pytest.raises(ConfigError, match="optimized_metric"):
        _fit(tmp_path, OptunaPruning(trial, monitor="test/loss"))


@pytest.mark.slow
def test_optuna_cli_resumes_a_persistent_study_and_prunes(tmp_path: Path):
    common = [
        "-m",
        *TINY,
        "hparams_search=cbow_optuna",
        "trainer.max_epochs=2",
        "model.embed_dim=choice(8,16)",
        f"hydra.sweep.dir={tmp_path}",
    ]
    first = run_train(*common, "hydra.sweeper.n_trials=2", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    db = tmp_path / "optuna.db"
    storage = f"sqlite:///{db}"
    kept = {job: (tmp_path / job / "metrics.json").stat().st_mtime_ns for job in ("0", "1")}

    # Same command, 4 trials in all, and a pruner that stops any trial at its first report.
    pruner = [
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.upper=0.0",
        "~hydra.sweeper.pruner.n_startup_trials",
        "~hydra.sweeper.pruner.n_warmup_steps",
    ]
    second = run_train(*common, "hydra.sweeper.n_trials=4", *pruner, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]

    study = optuna.load_study(study_name="cbow", storage=storage)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED] * 2
    assert {job: (tmp_path / job / "metrics.json").stat().st_mtime_ns for job in kept} == kept  # not redone
    for trial in study.trials:
        job = tmp_path / str(trial.number)
        config = OmegaConf.load(job / ".hydra" / "config.yaml")
        assert config.model.embed_dim == trial.params["model.embed_dim"]
        assert config.optimizer.lr == trial.params["optimizer.lr"]
        metrics = json.loads((job / "metrics.json").read_text())
        if trial.state == TrialState.COMPLETE:
            assert trial.value is not None
            assert math.isclose(trial.value, metrics["val/loss"], rel_tol=1e-6)
            assert len(trial.intermediate_values) == 2  # reported after each of the 2 validations
        else:
            assert len(trial.intermediate_values) == 1 and (job / PRUNED_MARKER).is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert (
        summary.count("| pruned |") == 2 and len([r for r in summary.splitlines() if r.startswith("| ")]) == 5
    )


def test_a_sweep_across_experiments_is_refused_before_any_job(tmp_path: Path):
    """Each experiment writes to its own folder: the jobs would scatter, and no summary could rank them."""
    proc = run_train("-m", "experiment=cbow,perceptron", "debug=fast", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: experiment: a sweep compares settings")
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))
