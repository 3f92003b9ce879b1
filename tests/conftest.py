"""Shared test helpers: the repo root, the reference fixtures, and running train.py in a subprocess."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from llm_lab.app.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
FIXTURES = REFERENCE / "cs336-fixtures"
register_resolvers()  # the ${choice:...} and ${cwd:} of conf/, for configs composed in tests


# A GPT small enough to train a few steps in seconds: the base of the resume and DDP tests.
TINY_GPT = [
    "experiment=gpt",
    "model.net.size=lab-tiny",
    "corpus.max_documents=8",
    "tokenizer.vocab_size=300",
    "data.context_length=32",
    "data.stride=32",  # gpt.yaml's stride of 64 would skip tokens of 32-token windows
    "trainer.val_check_interval=1000",
    "trainer.limit_val_batches=1",
    "logger=csv",
]

# The same GPT with a 128-token window: room for a prompt and its answer, or a task's endings.
TINY_GPT_128 = [
    *(o for o in TINY_GPT if not o.startswith(("data.context_length", "data.stride"))),
    "data.context_length=128",
    "data.stride=128",
]


# What a smoke run of a stage leaves out, where its config has the key (and the command does not set
# it): fewer documents of the corpus, test answers, instruction examples, training and held-out
# preference pairs, and smaller batches (a smoke run takes 5 steps whatever their size). The numbers
# shrink the run; they change nothing it does.
SMOKE_SIZES = {
    "corpus.max_documents": 40,
    "model.max_responses": 4,
    "data.max_examples": 64,
    "data.max_pairs": 16,
    "data.max_val_pairs": 16,
    "data.batch_size": 4,
}


def smoke_sizes(args: list[str]) -> list[str]:
    """The :data:`SMOKE_SIZES` overrides for ``train.py ARGS``, composed as train.py composes it (a
    sweep's first value stands for all of them: the data is the same in every job)."""
    # Only the group choices (experiment=, model=, ...) decide which of these keys a stage has and
    # their values; a dotted key the command sets is its own, never shrunk.
    choices = [re.sub(r"=([^,]*),.*", r"=\1", a) for a in args if "=" in a and "." not in a.split("=")[0]]
    given = {a.split("=", 1)[0].lstrip("+~") for a in args}
    return [
        f"{key}={size}"
        for key, (size, value) in _smoke_values(tuple(a for a in choices if not a.startswith("-"))).items()
        if key not in given and (value is None or (isinstance(value, int) and value > size))
    ]


@functools.cache
def _smoke_values(choices: tuple[str, ...]) -> dict[str, tuple[int, object]]:
    """Each key of SMOKE_SIZES the config composed with ``choices`` has: its smoke size and value."""
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(choices))
    values = {key: (size, OmegaConf.select(cfg, key, default="absent")) for key, size in SMOKE_SIZES.items()}
    return {key: found for key, found in values.items() if found[1] != "absent"}


def needs_fixtures() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        not FIXTURES.is_dir(),
        reason=f"reference fixtures not found at {FIXTURES} (no ../shared beside this clone)",
    )


# Where the tests' commands run: a folder of their own, not the repository (a user may start
# train.py from anywhere; its outputs/, the tokenizer cache included, land where it is started).
WORKDIR = Path(tempfile.mkdtemp(prefix="llm_lab_tests_"))
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def command(script: str, *args: str) -> list[str]:
    """``python <repo>/script args``: a top-level script of the lab, started from WORKDIR."""
    return [sys.executable, str(ROOT / script), *args]


def pasted(command_line: str) -> list[str]:
    """A command the lab printed for a user to paste (``python train.py ...``) as the words to run,
    with the interpreter running the tests for ``python``: a virtual environment that is not
    activated has no ``python`` on PATH, or another one without the lab's packages."""
    words = shlex.split(command_line)
    assert words[0] == "python", command_line
    return [sys.executable, *words[1:]]


def run_process(
    *overrides: str, script: str = "train.py", timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py OVERRIDES`` (or another script) in a new interpreter, from WORKDIR: for
    what is about processes themselves (DDP ranks, signals, concurrent runs). Everything else uses
    :func:`run_train`, the same command line without a new interpreter's ~7 s of imports."""
    return subprocess.run(
        command(script, *overrides), cwd=WORKDIR, capture_output=True, text=True, timeout=timeout, env=ENV
    )


def signal_at(
    marker: str | Callable[[str], bool],
    signum: int,
    *overrides: str,
    timeout: float = 240,
    script: str = "train.py",
    watch: str = "stdout",
    python_flags: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """Start ``python <script> OVERRIDES`` in a new process, send it ``signum`` when a line of its
    ``watch`` stream (stdout or stderr) contains ``marker`` (e.g. a progress line), and wait for it
    to end; the lines read until then are not in the result. The process takes Ctrl-C as one
    started from a terminal does, even when the tests run in the background (where the shell
    starts them with SIGINT ignored, and a child inherits that)."""
    proc = subprocess.Popen(
        [sys.executable, *python_flags, *command(script, *overrides)[1:]],
        cwd=WORKDIR,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    stream = proc.stdout if watch == "stdout" else proc.stderr
    assert stream is not None
    deadline = time.monotonic() + timeout
    for line in stream:
        if marker(line) if callable(marker) else marker in line:
            proc.send_signal(signum)
            break
        assert time.monotonic() < deadline, f"no line with {marker!r}"
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


class Regression(L.LightningModule):
    """Linear regression of 2 features, trained by SGD; its loss turns NaN from step ``nan_from`` on
    (never by default): a Lightning module small enough for tests of the training machinery."""

    def __init__(self, nan_from: int | None = None) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.nan_from = nan_from

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.lin(x), y)
        return (
            loss * float("nan") if self.nan_from is not None and self.global_step >= self.nan_from else loss
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The tests' models are tiny: on a shared 2-core CPU a second torch thread only adds waiting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def load_script(name: str) -> ModuleType:
    """A top-level script (``train.py``, ``generate.py``) as a module: they sit outside the package."""
    spec = importlib.util.spec_from_file_location(f"lab_{Path(name).stem}_script", ROOT / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up there
    spec.loader.exec_module(module)
    return module


def run_train(
    *args: str, script: str = "train.py", timeout: int = 0, cwd: Path = WORKDIR
) -> subprocess.CompletedProcess[str]:
    """``python <script> ARGS`` as a user types it in ``cwd``, run by the script's own ``main()`` in
    this process: the whole command-line path (Hydra's composition and callbacks, the one-line
    errors, the exit code, stdout and stderr) without a new interpreter's imports. ``timeout`` is
    accepted for symmetry with :func:`run_process` and ignored. Commands about processes
    themselves (DDP, signals, concurrent runs) use :func:`run_process`."""
    from hydra.core.global_hydra import GlobalHydra

    from llm_lab.app.run_folder import release

    cli = load_script(script).main
    GlobalHydra.instance().clear()
    argv, started_in = sys.argv, os.getcwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    try:
        sys.argv = [str(ROOT / script), *args]
        os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli()
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = argv
        os.chdir(started_in)
        GlobalHydra.instance().clear()
        release()  # the run folders' locks, which the end of a process would give back
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(sys.argv, returncode, stdout.getvalue(), stderr.getvalue())


def run_in_process(out: Path, experiment: str, *overrides: str) -> dict[str, float]:
    """Compose ``experiment`` as train.py does and fit it in this process, ``out`` as the run directory."""
    train = load_script("train.py").train
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                f"paths.root_dir={out}",
                f"paths.output_dir={out}",
                *overrides,
            ],
        )
    out.mkdir()
    return train(cfg)


def final_weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    """The weights in a run's last.ckpt, after checking that it was written at ``step``."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == step
    state: dict[str, torch.Tensor] = ckpt["state_dict"]
    return state


@dataclass
class Sweep:
    outputs: Path  # the outputs/ folder the sweep wrote, where a user runs tensorboard
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def readme_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """README's grid sweep as written (its Sweeps section), smoke-sized like every README command
    (``debug=fast``, fewer documents), run where a user starts it: what TensorBoard and the console
    then show is tested in test_dashboards.py and test_console.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    line = next(
        line for line in readme.splitlines() if line.startswith("python train.py -m experiment=cbow model.")
    )
    args = line.split("#")[0].split()[2:]
    cwd = tmp_path_factory.mktemp("readme_sweep")
    result = run_train(*args, "debug=fast", "corpus.max_documents=40", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return Sweep(cwd / "outputs", result)


# Lightning's own messages, which the console leaves to train.log (llm_lab/console.py).
LIGHTNING_MESSAGES = [
    "GPU available:",
    "TPU available:",
    "Seed set to",
    "`Trainer.fit` stopped",
    "Test metric",
    "DataLoader 0",
    "Validate metric",
    "💡",
]


def long_numbers(console: str) -> list[str]:
    """The ``key=value`` numbers of a console with more than 4 significant digits (an integer's
    trailing zeros are not counted: 10290 is 1029 rounded)."""
    found = []
    for number in re.findall(r"=(-?\d[\d.]*(?:e[+-]?\d+)?)(?![\w.-])", console):
        mantissa = number.lstrip("-").split("e")[0]
        digits = mantissa.replace(".", "").lstrip("0")
        if "." not in mantissa:
            digits = digits.rstrip("0")
        if len(digits) > 4:
            found.append(number)
    return found
