"""The shell every entry point runs in: the one place that prints ``error:`` lines, picks the exit
code, handles signals, writes the FAILED marker and the resume hint, and reports a sweep's outcome.

An entry point is a plain function of the composed config (its *flow*), made a command by
:func:`entry_point`::

    @entry_point("train")
    def main(cfg: DictConfig) -> float | None:
        preflight(cfg, ...)          # every problem of the config at once
        ...                          # the flow, top to bottom

    if __name__ == "__main__":
        main()

Exit codes: 0 done; 2 bad input (a config, a file: one line per problem, naming the key or file and
the fix); 130 / 143 interrupted by SIGINT / SIGTERM (128 + the signal's number, the shell's own
convention), with what was kept and how to go on; 1 a bug, with its whole traceback.

Importing this module is light (no torch, no Lightning, no Hydra): :func:`starting` wraps an entry
point's heavy imports, so that Ctrl-C while they load is one line as well.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llm_lab.console import configure_console, escaped, in_sweep, print_and_log
from llm_lab.errors import ArgumentError, DivergedError, Interrupted, LabError, Refusal, StorageError

Flow = Callable[[Any], Any]  # an entry point's flow: the composed config in, its result out


class Terminated(BaseException):
    """SIGTERM as an exception, as Ctrl-C is a KeyboardInterrupt (Python's default would end the
    process without a word). Not a KeyboardInterrupt, which Lightning would swallow mid-fit: while
    training, :class:`~llm_lab.callbacks.checkpoint.LastCheckpoint` takes both signals itself."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


_pending: list[int] = []  # signals raised as exceptions that the shell has not caught yet
AGAIN_AFTER_S = 0.2


def _interrupt(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM as an exception. Python drops an exception raised while a ``__del__`` runs
    (it prints "Exception ignored in ..." and goes on), so the signal is also remembered and raised
    again every 0.2 s until the shell has caught it (:func:`seen`)."""
    _pending.append(signum)
    signal.setitimer(signal.ITIMER_REAL, AGAIN_AFTER_S)
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _again(signum: int, frame: Any) -> None:
    if _pending:
        _interrupt(_pending.pop(), frame)


def seen() -> None:
    """The interruption is in hand: it is not raised again."""
    _pending.clear()
    signal.setitimer(signal.ITIMER_REAL, 0)


def raise_pending() -> None:
    """Raise an interruption that was dropped and not yet raised again (at the end of a block)."""
    if _pending:
        _interrupt(_pending.pop(), None)


def signal_number(stop: BaseException) -> int:
    """The signal behind an interruption: SIGTERM for :class:`Terminated`, else SIGINT (Ctrl-C)."""
    return stop.signum if isinstance(stop, Terminated) else signal.SIGINT


@contextlib.contextmanager
def signals() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated` and Ctrl-C a KeyboardInterrupt that is not
    lost (:func:`_interrupt`); a process started with SIGINT ignored keeps ignoring it. The caller's
    handlers come back after it (a command run in a notebook or by the tests must not leave its
    handlers in their process)."""
    handlers: dict[int, Any] = {signal.SIGTERM: _interrupt, signal.SIGALRM: _again}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers[signal.SIGINT] = _interrupt
    try:
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = {}
    try:
        yield
    finally:
        if previous:
            seen()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Wrap an entry point's heavy imports (torch and Lightning take seconds): Ctrl-C or SIGTERM
    while they load ends the command with one line and exit code 130 / 143, not a traceback."""
    with signals():
        try:
            yield
            raise_pending()
        except (KeyboardInterrupt, Terminated) as stop:
            seen()
            name = signal.Signals(signal_number(stop)).name
            print(f"interrupted: {name} while starting: nothing to resume", file=sys.stderr, flush=True)
            raise SystemExit(128 + signal_number(stop)) from None


def entry_point(config_name: str, run_folder: bool = True) -> Callable[[Flow], Callable[[], None]]:
    """Make ``flow`` a command: Hydra composes ``conf/<config_name>.yaml`` (``conf/`` beside the
    entry point's file, wherever the command is started) with the command line, and runs ``flow``
    for each job, inside the shell. ``run_folder``: the command writes a run folder (``train.py``),
    which then gets the FAILED marker of a failed run and the command that resumes an interrupted one.
    """

    def make(flow: Flow) -> Callable[[], None]:
        import hydra

        conf_dir = Path(inspect.getfile(flow)).resolve().parent / "conf"

        @functools.wraps(flow)
        def job(cfg: Any) -> Any:
            return _job(cfg, flow, run_folder)

        task = hydra.main(version_base="1.3", config_path=str(conf_dir), config_name=config_name)(job)

        @functools.wraps(flow)
        def command() -> None:
            _command(task, conf_dir, config_name)

        return command

    return make


def _command(task: Callable[[], Any], conf_dir: Path, config_name: str) -> None:
    """Run Hydra's main (one run, or every job of a sweep); what stops it before or between jobs is
    one line and an exit code, like every other error of the lab."""
    from hydra.errors import (
        ConfigCompositionException,
        InstantiationException,
        MissingConfigException,
        OverrideParseException,
    )

    from llm_lab.app import sweeps
    from llm_lab.app.overrides import composition_error, plugin_error

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's errors come back here instead of being printed
    sweeps.reset_outcome()
    with signals():
        try:
            task()
            raise_pending()
        except (ConfigCompositionException, MissingConfigException, OverrideParseException) as err:
            fail(composition_error(err, command_line(), conf_dir, config_name))
        except InstantiationException as err:
            # Hydra builds its plugins (the Optuna sweeper's sampler and pruner) with instantiate.
            fail(plugin_error(err))
        except Refusal as stop:  # a Hydra callback's: a run folder in use, a sweep with DDP
            if isinstance(stop.error, OSError) and stop.error.filename is not None:
                fail(unwritable(stop.error, "hydra.run.dir, paths.log_dir or paths.cache_dir"))
            fail(str(stop.error))
        except LabError as err:  # a plugin's own check (the Optuna sweeper's setup)
            fail(str(err))
        except OSError as err:
            # A folder that cannot be made (hydra.run.dir=/proc/x, a file in its place, a read-only
            # disk): Hydra makes the run folder before any of the lab's code runs.
            if err.filename is None:
                raise
            fail(unwritable(err, "hydra.run.dir, paths.log_dir or paths.cache_dir"))
        except ValueError as err:
            if not str(err).startswith("Config group override"):
                raise
            fail(null_group_line())
        except (KeyboardInterrupt, Terminated) as stop:
            # No job was running: Hydra was setting one up, or between two jobs of a sweep.
            seen()
            last_job = sweeps.OUTCOME.hydra
            sweeps.summary_so_far()
            said = sweeps.unrun_jobs_line(last_job) if last_job is not None else None
            print(said or "interrupted before the first training step: nothing to resume", file=sys.stderr)
            raise SystemExit(128 + signal_number(stop)) from None
    line = sweeps.failed_jobs_line()
    if line is not None:  # a sweep went on past failed jobs: the command as a whole did not succeed
        print(line, file=sys.stderr)
        raise SystemExit(2)


def fail(text: str) -> None:
    """The end of a command refused before any job ran: an ``error:`` line per problem, exit code 2."""
    for line in text.splitlines():
        print(f"error: {escaped(line)}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def command_line() -> list[str]:
    """The command line's overrides as Hydra itself reads them from ``sys.argv``."""
    from hydra._internal.utils import get_args_parser

    return list(get_args_parser().parse_known_args()[0].overrides)


def null_group_line() -> str:
    """Hydra's refusal of ``group=null``, said with the way to drop a group."""
    nulls = [
        o.split("=", 1)[0] for o in command_line() if o.endswith("=null") and "." not in o.split("=", 1)[0]
    ]
    group = nulls[0] if nulls else "a config group"
    return (
        f"{group}=null: a config group takes one of its options, not null (to run without it: "
        f"~{group if nulls else '<group>'}; python {sys.argv[0]} --help lists the options)"
    )


def _job(cfg: Any, flow: Flow, run_folder: bool) -> Any:
    """One job (a run, or one job of a sweep): ``flow(cfg)``, its errors and interruptions said."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from llm_lab import config
    from llm_lab.app import sweeps
    from llm_lab.hparams import varied_overrides

    configure_console()
    hydra_cfg = HydraConfig.get()
    in_sweep(str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None)
    label = sweeps.job_label()  # None for a single run
    task = [str(o) for o in hydra_cfg.overrides.task]
    swept = varied_overrides(task, command_line()) if label is not None else []
    config.COMMAND_LINE.set(task, {str(k): str(v) for k, v in hydra_cfg.runtime.choices.items()}, swept)
    if label is not None:
        sweeps.OUTCOME.started += 1
        sweeps.OUTCOME.hydra = copy.deepcopy(hydra_cfg)  # to say what is left, if stopped
        sweeps.OUTCOME.objective = (cfg.get("optimized_metric"), cfg.get("optimized_direction"))
    try:
        if label is not None and run_folder:
            done = complete_sweep_job(cfg, hydra_cfg)
            if done is not False:
                return done
        result = flow(cfg)
        raise_pending()
        if label is None and run_folder:
            metric, direction = cfg.get("optimized_metric"), cfg.get("optimized_direction")
            summary = sweeps.refresh_summary(Path(cfg.paths.output_dir), metric, direction)
            if summary is not None:
                print_and_log(f"the sweep's summary is up to date again: {summary}", logging.INFO)
        return result
    except Interrupted as stop:
        # Not a failure: what was made is kept (a checkpoint, the text so far).
        seen()
        if not run_folder:
            print_and_log(f"interrupted: {stop}", logging.WARNING)
        else:
            print_and_log(f"interrupted: {stop}; {how_to_go_on(cfg, stop.step > 0)}", logging.WARNING)
            stop_sweep(label, started=stop.step > 0)
        raise SystemExit(128 + stop.signum) from None
    except (KeyboardInterrupt, Terminated) as stop:
        # Outside the training loop: before it (corpus, tokenizer, data), or after it (the final
        # validation, the test stage), when the run folder already holds a checkpoint to go on from.
        seen()
        name = signal.Signals(signal_number(stop)).name
        saved = run_folder and has_checkpoint(Path(cfg.paths.output_dir))
        if saved:
            print_and_log(f"interrupted: {name}; {how_to_go_on(cfg, True)}", logging.WARNING)
        elif run_folder:
            print_and_log("interrupted before the first training step: nothing to resume", logging.WARNING)
        else:
            print_and_log(f"interrupted: {name} before it finished", logging.WARNING)
        stop_sweep(label, started=saved)
        raise SystemExit(128 + signal_number(stop)) from None
    except (LabError, ArgumentError, OSError) as err:
        # A bad value in the config or the data, or a folder the run cannot write: one clear line,
        # exit code 2, and a FAILED marker so the run directory never looks like a finished run.
        lines = error_line(err, cfg).splitlines()  # several for a preflight's several problems
        if run_folder:
            with contextlib.suppress(OSError):  # the marker is a courtesy: the error line still comes
                (Path(cfg.paths.output_dir) / sweeps.FAILED_MARKER).write_text(
                    "".join(f"{line}\n" for line in lines)
                )
        if isinstance(err, DivergedError) and run_folder and label is None:
            print_and_log(lower_rate_advice(cfg), logging.WARNING)  # the error stays the last line
        for line in lines:
            print_and_log(f"error: {line}" if label is None else f"error: {label}: {line}")
        if label is None:
            raise SystemExit(2) from None
        # In a sweep the other jobs may be fine: this one is recorded as failed (the Optuna sweeper
        # finds its FAILED file, the summary lists it) and the sweep goes on; the command exits 2
        # once every job has run (see _command).
        sweeps.OUTCOME.failed.append(hydra_cfg.job.num)
        return None


def complete_sweep_job(cfg: Any, hydra_cfg: Any) -> Any:
    """A job of a grid sweep run again into its earlier folder (the same sweep command, to complete
    a sweep that was interrupted): a job that finished there is kept (its metric returned, nothing
    trained), one that was cut off resumes from its checkpoint; False: the job runs as usual."""
    from omegaconf import open_dict

    from llm_lab.app import sweeps

    if not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return False  # an Optuna study resumes by itself, each trial in a folder of its own
    output_dir = Path(cfg.paths.output_dir)
    done = sweeps.finished_earlier(output_dir, cfg.get("optimized_metric"))
    if done is not False:
        print_and_log(f"{sweeps.job_label()}: finished earlier in {output_dir}, kept", logging.INFO)
        return done
    if has_checkpoint(output_dir) and cfg.get("ckpt_path") is None:
        with open_dict(cfg):
            cfg.ckpt_path = str(output_dir)
    return False


def error_line(err: BaseException, cfg: Any) -> str:
    """The one line for an error of a job, naming the config key where one is the cause."""
    from llm_lab.config import as_config_error

    if isinstance(err, OSError):
        if err.filename is None:
            raise err
        return unwritable(err, path_key(cfg, err.filename) or "the path")
    if isinstance(err, ArgumentError):  # raised by the library after the objects were built
        return str(as_config_error(err, cfg))
    if isinstance(err, StorageError) and err.path is not None and (key := path_key(cfg, err.path)):
        return f"{key}: {err}"  # the setting that put it there
    return str(err)


def unwritable(err: OSError, where: str) -> str:
    """The line for a folder or file the lab cannot make or write, naming where it is set."""
    return f"{err.filename}: cannot be created or written ({err.strerror}) (choose another: {where})"


def path_key(cfg: Any, filename: Any) -> str | None:
    """The config key of the deepest folder that holds ``filename`` (``paths.cache_dir`` over
    ``paths.log_dir`` for a file in the cache; ``hydra.run.dir`` for the run's own folder)."""
    from llm_lab.config import flatten, plain

    target = Path(str(filename)).resolve()
    found: dict[str, Path] = {}
    for key, value in flatten(plain(cfg)).items():
        if isinstance(value, str) and ("/" in value or value == ".") and key != "paths/root_dir":
            folder = Path(value).expanduser().resolve()
            if folder == target or folder in target.parents:
                found[key.replace("/", ".")] = folder
    if not found:
        return None
    key = max(found, key=lambda k: len(found[k].parts))
    return "hydra.run.dir" if key == "paths.output_dir" else key


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run folder holds a readable checkpoint to resume from."""
    from llm_lab.run_dir import newest_checkpoint

    return (run_dir / "checkpoints").is_dir() and newest_checkpoint(run_dir / "checkpoints") is not None


def how_to_go_on(cfg: Any, resumable: bool) -> str:
    """After an interrupted run: the command that resumes it (an Optuna trial is run again by its
    study), or that there is nothing to resume."""
    from llm_lab.optuna_trial import OPTUNA_KEY

    if not resumable:
        return "nothing to resume"
    if cfg.get(OPTUNA_KEY) is not None:
        return "the trial starts again when its study resumes"
    return f"resume with:\n  {resume_command(Path(cfg.paths.output_dir))}"


def resume_command(output_dir: Path, changes: dict[str, Any] | None = None, resume: bool = True) -> str:
    """The command line that resumes this run in its own directory from its newest checkpoint
    (``resume=False``: that starts it again there), with the overrides ``changes`` in place of
    the command line's own values of those keys."""
    from hydra.core.hydra_config import HydraConfig

    from llm_lab.app.overrides import command_word

    changes = changes or {}
    output_dir = output_dir.resolve()
    run_dir = output_dir.relative_to(Path.cwd()) if output_dir.is_relative_to(Path.cwd()) else output_dir
    replaced = ("hydra.run.dir=", "ckpt_path=", *(f"{key}=" for key in changes))
    kept = [o for o in HydraConfig.get().overrides.task if not o.startswith(replaced)]
    words = [shlex.quote(w) for w in ["python", sys.argv[0], *kept]]
    words += [command_word(key, value) for key, value in changes.items()]
    words.append(command_word("hydra.run.dir", str(run_dir)))
    return " ".join([*words, command_word("ckpt_path", str(run_dir))] if resume else words)


def lower_rate_advice(cfg: Any) -> str:
    """After a diverged run: the command that goes on from its newest (finite) checkpoint, or
    starts it again where it has none, at a tenth of its learning rate. A resumed run trains at
    the rate its command line gives (llm_lab/lit/resume.py), so the command does what it says."""
    from omegaconf import OmegaConf

    lr = OmegaConf.select(cfg, "optimizer.lr")
    if not isinstance(lr, int | float) or isinstance(lr, bool):
        return "lower the learning rate or set trainer.gradient_clip_val, then resume with ckpt_path"
    resumable = has_checkpoint(Path(cfg.paths.output_dir))
    command = resume_command(Path(cfg.paths.output_dir), {"optimizer.lr": float(f"{lr / 10:.3g}")}, resumable)
    what = "resume from the last good checkpoint" if resumable else "start again"
    return f"{what} at a tenth of the learning rate (or set trainer.gradient_clip_val):\n  {command}"


def stop_sweep(label: str | None, started: bool) -> None:
    """After an interrupted job of a sweep (``started``: it trained a step, and its checkpoint
    resumes it): the summary of the jobs so far, which jobs did not run, and how to run them."""
    if label is None:
        return
    from hydra.core.hydra_config import HydraConfig

    from llm_lab.app import sweeps

    sweeps.summary_so_far()
    line = sweeps.unrun_jobs_line(HydraConfig.get(), started=started)
    if line:
        print_and_log(line, logging.WARNING)
