"""The folders a command writes to: claiming a run folder (one run at a time, one experiment per
folder), the clock-named folders of runs and sweeps, and finding what a run resumes or starts from.
Reading a run folder back (its checkpoints, its model) is :mod:`llm_lab.run_dir`'s job."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from llm_lab.app.overrides import command_word, format_value
from llm_lab.app.sweeps import same_sweep
from llm_lab.errors import ConfigError, Refusal, refused
from llm_lab.locks import try_hold
from llm_lab.run_dir import checkpoint_path, newest_checkpoint

if TYPE_CHECKING:
    from llm_lab.models.pretrained import Loaded

log = logging.getLogger(__name__)


def is_first_process() -> bool:
    """Whether this is rank 0 of its run (or the only process): the one that owns the run folder.
    Lightning and torchrun tell the other processes their rank in the environment."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "RANK"))


def holds_results(run_dir: Path) -> bool:
    """Whether a run already trained here: checkpoints, or the metrics of a finished run."""
    return any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "metrics.json").is_file()


def resumes(ckpt_path: str | None, run_dir: Path) -> bool:
    """Whether ``ckpt_path`` continues the run in ``run_dir`` (``last``, the folder, or a file in it)."""
    if ckpt_path is None:
        return False
    if ckpt_path == "last":
        return True
    target = Path(ckpt_path).resolve()
    return target == run_dir.resolve() or run_dir.resolve() in target.parents


def resume_point(ckpt_path: str | None, output_dir: Path) -> str | None:
    """The checkpoint a run starts from. ``ckpt_path`` may be a checkpoint file, a run directory (its
    newest checkpoint by step), or ``last``: this run folder's newest checkpoint if it has one, else a
    fresh start (the same command relaunched by a cluster after pre-emption, ``hydra.run.dir`` fixed)."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        if not any((output_dir / "checkpoints").glob("*.ckpt")):
            log.info("ckpt_path=last: no checkpoint in %s yet, so training starts at step 0", output_dir)
            return None
        ckpt_path = str(output_dir)
    return str(checkpoint_path(ckpt_path))


def folder_experiment(run_dir: Path) -> str | None:
    """The experiment a run folder was made by, from its ``.hydra/hydra.yaml`` read as plain data
    (None when there is none, or it cannot be read)."""
    try:
        record = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text(encoding="utf-8"))
        return str(record["hydra"]["runtime"]["choices"]["experiment"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError):
        return None


def newest_finished_run(log_dir: Path, experiment: str) -> Path | None:
    """The newest run of ``experiment`` below ``log_dir`` (``outputs/<experiment>/``: single runs and
    sweep jobs) that finished, i.e. wrote its ``metrics.json``; None when there is none."""
    finished = [m.parent for m in (log_dir / experiment).glob("**/metrics.json")]
    finished = [run for run in finished if folder_experiment(run) in (experiment, None)]
    return max(finished, key=lambda run: (run / "metrics.json").stat().st_mtime, default=None)


_held_locks: list[TextIO] = []  # open lock files: a claim lasts as long as the process keeps them


def release() -> None:
    """Give up the run folders this process claimed (they are free again when it exits anyway)."""
    while _held_locks:
        _held_locks.pop().close()


def claim(run_dir: Path, ckpt_path: str | None, experiment: str | None = None) -> None:
    """Make ``run_dir`` this process's: refuse a folder that another process is writing to, that
    another experiment's run is in, or that another run trained in (unless this run resumes it),
    and clear what a killed save left behind."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = try_hold(run_dir / ".lock")
    if lock is None:
        raise ConfigError(
            "hydra.run.dir",
            f"{run_dir} is in use by another run right now",
            "wait for it to end, or choose a new hydra.run.dir",
        )
    try:
        earlier = folder_experiment(run_dir) if holds_results(run_dir) else None
        if earlier is not None and experiment is not None and earlier != experiment:
            # Not even to resume: its checkpoint is of another model, and its snapshot and results
            # would be overwritten before that is found out.
            raise ConfigError(
                "hydra.run.dir",
                f"{run_dir} holds an experiment={earlier} run, not experiment={experiment}",
                "choose a new hydra.run.dir: a run folder holds one experiment",
            )
        if holds_results(run_dir) and not resumes(ckpt_path, run_dir):
            newest = newest_checkpoint(run_dir / "checkpoints")
            what = f"a checkpoint at step {newest[1]}" if newest else "the results of a finished run"
            raise ConfigError(
                "hydra.run.dir",
                f"{run_dir} holds another run ({what})",
                f"resume it with {command_word('ckpt_path', str(run_dir))}, or choose a new hydra.run.dir",
            )
    except ConfigError:
        lock.close()
        raise
    _held_locks.append(lock)
    for leftover in (run_dir / "checkpoints").glob(".*.tmp"):
        leftover.unlink()  # a save killed half-way: never a checkpoint, never read


def unused_folder(base: Path) -> Path:
    """``base``, else ``base_2``, ``base_3``, …: the first that does not exist yet, made now.

    Clock-named run folders are to the second, and two runs can start within one (two terminals,
    a script): each gets its own folder. Making the folder is the claim (``mkdir`` fails if it
    exists), so two processes never pick the same one."""
    base.parent.mkdir(parents=True, exist_ok=True)
    folder, n = base, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
            folder = base.with_name(f"{base.name}_{n}")


def clock_named(node: DictConfig) -> bool:
    """Whether ``node.dir`` (``hydra.run``, ``hydra.sweep``) is named by the clock, the default."""
    settings = OmegaConf.to_container(node, resolve=False)
    return isinstance(settings, dict) and "${now:" in str(settings.get("dir"))


class OneRunPerDirectory(Callback):
    """Hydra callback: before a single run writes anything into ``hydra.run.dir`` (its config
    snapshot included), :func:`claim` the folder; a refusal reaches the shell as a ConfigError. A
    clock-named folder that another run took within the same second gives way to the next
    :func:`unused_folder`.

    DDP processes that Lightning or torchrun start for the same run (rank > 0) share the folder of
    rank 0, which holds the claim. Sweep jobs get fresh numbered folders (and an Optuna trial
    interrupted earlier is run again in its own), so only single runs are claimed; a grid sweep's
    clock-named folder is made unused as a run's is.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_first_process():
            return
        experiment = config.hydra.runtime.choices.get("experiment")
        with refused():
            if clock_named(config.hydra.run):
                with read_write(config.hydra.run), open_dict(config.hydra.run):
                    config.hydra.run.dir = str(unused_folder(Path(config.hydra.run.dir)))
            claim(Path(config.hydra.run.dir), config.get("ckpt_path"), experiment)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A grid sweep's clock-named folder, likewise. Each job's config is composed again from
        # the command line's overrides, so the folder chosen joins them. A folder the user named
        # that holds an earlier grid's jobs is refused: job 0 would write into job 0's folder.
        # (An Optuna study's folder is reused on purpose: the same command resumes the study.)
        if not clock_named(config.hydra.sweep):
            sweep_dir = Path(config.hydra.sweep.dir)
            grid = str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper")
            earlier = sweep_dir.is_dir() and (
                holds_results(sweep_dir) or any(holds_results(job) for job in sweep_dir.iterdir())
            )
            if grid and earlier and not same_sweep(sweep_dir, list(config.hydra.overrides.task)):
                raise Refusal(
                    ConfigError(
                        "hydra.sweep.dir",
                        f"{sweep_dir} holds an earlier run or sweep",
                        "choose a new hydra.sweep.dir, or leave it out: each sweep gets a folder of its own "
                        "(the same sweep command completes the sweep there)",
                    )
                )
            return
        folder = str(unused_folder(Path(config.hydra.sweep.dir)))
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.sweep.dir = folder
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={format_value(folder)}")


# Settings that read a file of an earlier run: the name of an experiment there means that file of
# the experiment's newest finished run (``model.net.embeddings=cbow``: the newest CBoW vectors), or
# the run folder itself (None: ``init_from=gpt``, the newest pretrained GPT).
FROM_EARLIER_RUNS: dict[str, str | None] = {"model.net.embeddings": "vectors.txt", "init_from": None}
EXPERIMENTS = Path(__file__).resolve().parents[2] / "conf" / "experiment"


def names_experiment(key: str, value: str) -> bool:
    """Whether ``value`` of ``key`` is an experiment's name. For ``init_from`` only the name of an
    experiment of conf/experiment/ is one: another bare word is a Hugging Face hub name (``gpt2``)."""
    if FROM_EARLIER_RUNS[key] is None:
        return (EXPERIMENTS / f"{value}.yaml").is_file()
    return value.isidentifier()


def earlier_run_file(cfg: DictConfig, key: str) -> str | None:
    """The value of ``key`` as a file: an existing path as it is, an experiment's name as that file
    (or folder) of its newest finished run (a ConfigError saying which command makes one when there
    is none)."""
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, str) or Path(value).expanduser().exists() or not names_experiment(key, value):
        return value
    log_dir = Path(cfg.paths.log_dir)
    run = newest_finished_run(log_dir, value)
    wanted = FROM_EARLIER_RUNS[key]
    if run is None:
        alternative = f"the path of a {wanted}" if wanted else "a run folder or a Hugging Face model"
        raise ConfigError(
            key,
            f"no finished experiment={value} run in {log_dir / value}",
            f"run python train.py experiment={value} first, or give {alternative}",
        )
    return str(run / wanted) if wanted else str(run)


def resolve_earlier_runs(cfg: DictConfig) -> None:
    """Replace in ``cfg`` every experiment's name of a :data:`FROM_EARLIER_RUNS` setting by the file
    or folder of its newest finished run."""
    for key in FROM_EARLIER_RUNS:
        if OmegaConf.select(cfg, key) is not None:
            OmegaConf.update(cfg, key, earlier_run_file(cfg, key))


def starting_model(cfg: DictConfig) -> Loaded | None:
    """The model ``init_from`` names (an experiment's name resolved already), with its tokenizer,
    which is saved in the run folder (where generate.py finds it); None: the run starts from random
    weights (and says so when its model could have started from one)."""
    from llm_lab.config import keyed, parameters_of
    from llm_lab.models.pretrained import load_model

    if cfg.get("init_from") is None:
        if "pretrained" in parameters_of(OmegaConf.select(cfg, "model._target_") or ""):
            log.info("init_from=null: the model starts from random weights")
        return None
    with keyed(cfg, cfg):
        start = load_model(cfg.init_from)
    log.info(f"init_from: starting from {cfg.init_from} ({start.net.num_params(False):,} parameters)")
    if is_first_process():
        start.tokenizer.save(Path(cfg.paths.output_dir) / "tokenizer.json")
    return start


def check_same_tokenizer(ckpt_path: Path, tokenizer: Any) -> None:
    """Refuse to resume a checkpoint with another tokenizer than the one its run saved beside it
    (changed data.* or tokenizer.* settings train a new one): its ids would mean other tokens."""
    from llm_lab.tokenizers.base import tokenizer_hash
    from llm_lab.tokenizers.build import load_tokenizer

    saved = ckpt_path.parent.parent / "tokenizer.json"
    if saved.is_file() and tokenizer_hash(load_tokenizer(saved)) != tokenizer_hash(tokenizer):
        raise ConfigError(
            "ckpt_path",
            f"{ckpt_path} was trained with {saved}, and this run's data.* and tokenizer.* settings "
            "give another tokenizer",
            "resume with the settings of the run you resume (its .hydra/overrides.yaml)",
        )
