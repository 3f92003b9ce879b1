"""Every command the READMEs show runs as written, from a fresh working directory.

The commands are read from the fenced ``bash`` blocks of README.md, README.pt-BR.md and
data/README.md, in order (a later command may use what an earlier one wrote: ``generate.py`` reads
the GPT run above it). Each runs through ``train.py``'s / ``generate.py``'s own command line with
only size-shrinking overrides appended (``debug=fast``, fewer documents, two Optuna trials, five new
tokens). A command that cannot run here is listed in NOT_RUN with the reason; a placeholder such as
``<time>`` is filled with what the commands above produced. A README edit that breaks a command, or
a command the test does not know how to run, fails the suite.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from conftest import LIGHTNING_MESSAGES, ROOT, long_numbers, run_train, smoke_sizes
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from llm_lab.app.preflight import missing_values
from llm_lab.config import type_problems
from llm_lab.data.corpus import builtin_corpus
from llm_lab.models.gpt import GPT, GPTConfig
from llm_lab.models.hf import save_hf
from llm_lab.tokenizers.bpe_fast import FastBPETokenizer

READMES = [ROOT / "README.md", ROOT / "README.pt-BR.md", ROOT / "data" / "README.md"]

# (what a command contains, why this test does not run it)
NOT_RUN = [
    ("pip install", "installs the lab: CI's set-up runs it"),
    ("python -m pytest", "this test suite itself"),
    ("ruff ", "a linter: CI runs it"),
    ("mypy", "a type checker: CI runs it"),
    ("tensorboard --logdir", "a server; tests/test_dashboards.py reads run folders as TensorBoard does"),
    ("python bench/", "a benchmark: minutes of measuring, it prints ratios and neither passes nor fails"),
    ("chat=true", "a conversation on the terminal: tests/test_chat.py pipes two turns into it"),
    ("trainer=gpu", "needs a CUDA GPU"),
    ("trainer=ddp ", "needs CUDA GPUs"),
    ("trainer=fsdp", "needs CUDA GPUs"),
    ("torchrun ", "starts processes on several machines"),
    ("srun ", "needs a SLURM cluster"),
    (
        "lm_eval:",
        "runs a harness task from the hub (no internet here; tests/test_eval_harness.py runs a local one)",
    ),
    (
        "corpus.hf_dataset=",
        "downloads from the hub (no internet here; tests/test_corpus.py reads local files the same way)",
    ),
]
SHRINK = {"train.py": ["debug=fast"], "generate.py": ["max_new_tokens=5"], "evaluate.py": ["limit=20"]}


def blocks(readme: Path) -> list[list[str]]:
    """The shell commands of each ```bash block of a markdown file: continuation lines joined,
    comments dropped, ``a && b`` as two commands."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S):
        lines = []
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"<[^>]+>", lambda m: m.group(0).replace(" ", "_"), line)  # one word each
            text = " ".join(shlex.quote(w) if w != "&&" else w for w in shlex.split(line, comments=True))
            lines += [part.strip() for part in text.split(" && ") if part.strip()]
        found.append(lines)
    return found


def commands(readme: Path) -> list[str]:
    """Every command of the file's ```bash blocks, in order."""
    return [command for block in blocks(readme) for command in block]


def not_run(command: str) -> str | None:
    return next((why for marker, why in NOT_RUN if marker in f"{command} "), None)


def hf_folder(where: Path) -> Path:
    """A Hugging Face GPT-2 folder with a tokenizer beside it, as a user would download one."""
    folder = where / "hf_gpt2"
    tokenizer = FastBPETokenizer.train(300, documents=builtin_corpus()[:10], special_tokens=["<|endoftext|>"])
    tokenizer.save(folder / "tokenizer.json")
    torch.manual_seed(0)
    save_hf(
        GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=1, n_head=2, n_embd=32)),
        folder,
    )
    return folder


def fill(command: str, where: Path) -> str:
    """The command with its placeholders filled from what ``where`` holds."""

    def value(match: re.Match[str]) -> str:
        name = match.group(0)
        if name == "<time>":  # the newest run folder of the path it is part of
            parent = where / command[: match.start()].split()[-1].split("=")[-1]
            runs = sorted(parent.glob("*"), key=lambda p: p.stat().st_mtime)
            assert runs, f"{command}: no run under {parent} yet for {name}"
            return runs[-1].name
        if name.startswith("<folder_with_config.json"):
            return str(hf_folder(where))
        raise AssertionError(f"{command}: the test does not know how to fill {name}")

    return re.sub(r"<[^>]+>", value, command)


def user_files(where: Path) -> None:
    """What README's commands expect of where they run: a clone's ``data/`` (its README.md), and
    the folders a user made there for their own text, files saved into them as UTF-8."""
    (where / "data").mkdir()
    for file in (ROOT / "data").iterdir():  # its README.md, the example texts to classify
        (where / "data" / file.name).write_bytes(file.read_bytes())
    docs = builtin_corpus()[:20]
    for folder in (where / "my_texts", where / "my_corpus", where / "data" / "my_texts"):
        folder.mkdir()
        for i, doc in enumerate(docs):
            (folder / f"doc{i}.txt").write_text(doc, encoding="utf-8")
    (where / "data" / "my_texts" / "my_book.txt").write_text("\n\n".join(docs), encoding="utf-8")


def test_the_translation_shows_the_same_commands():
    assert commands(ROOT / "README.pt-BR.md") == commands(ROOT / "README.md")


def runnable_blocks() -> list[tuple[Path, int]]:
    """Each ```bash block with a command this test runs, by its README and position: a block reads
    only what its own commands write (a ``generate.py`` follows the ``train.py`` that made its run),
    so each runs in a fresh folder of its own, and the blocks are shared out between the test workers."""
    return [
        (readme, i)
        for readme in (ROOT / "README.md", ROOT / "data" / "README.md")
        for i, block in enumerate(blocks(readme))
        if any(not not_run(command) for command in block)
    ]


@pytest.mark.parametrize(
    ("readme", "block"), runnable_blocks(), ids=[f"{r.relative_to(ROOT)}:{i}" for r, i in runnable_blocks()]
)
def test_every_readme_command_runs_as_written(readme: Path, block: int, tmp_path: Path):
    user_files(tmp_path)
    failures = []
    for command in blocks(readme)[block]:
        if not_run(command):
            continue
        words = shlex.split(fill(command, tmp_path))
        assert words[0] == "python" and words[1] in SHRINK, (
            f"a README command this test cannot run: {command}"
        )
        args = words[2:] + SHRINK[words[1]]
        if words[1] == "train.py":
            args += smoke_sizes(args)
        if "hparams_search=" in command:
            args.append("hydra.sweeper.n_trials=2")
        result = run_train(*args, script=words[1], cwd=tmp_path)
        if result.returncode != 0:
            failures.append(f"{command}\n{result.stderr[-1500:]}")
    assert not failures, "\n\n".join(failures)


def test_the_readmes_show_commands_to_run():
    assert len(runnable_blocks()) >= 5 and any(r.parent.name == "data" for r, _ in runnable_blocks())


def test_commands_not_run_here_still_name_real_keys_and_options(tmp_path: Path):
    """A GPU, multi-machine or hub command cannot run on this machine, but a typo in its keys, an
    option that does not exist or a value of the wrong type would still reach a user: each is
    composed as train.py composes it, and its trainer settings are checked against Lightning's."""
    composed = []
    for command in commands(ROOT / "README.md"):
        if not not_run(command) or "train.py" not in shlex.split(command):
            continue
        words = shlex.split(fill(command, tmp_path))
        args = [a for a in words[words.index("train.py") + 1 :] if a != "-m"]
        args += [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"]  # Hydra sets these when run
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=args, return_hydra_config=True)
        with open_dict(cfg):
            del cfg["hydra"]  # composed only to check the hydra.* overrides; train.py never sees it
        assert not missing_values(cfg), command
        assert not list(type_problems(cfg.trainer)), command  # as train.py builds the Trainer
        composed.append(command)
    assert any("srun " in c for c in composed) and any("trainer=gpu" in c for c in composed), composed


def test_the_quick_start_prints_the_labs_lines_only(tmp_path: Path):
    """README's first command, shrunk as above: Lightning's messages stay in train.log, and every
    number it prints has at most 4 significant digits."""
    quick_start = next(c for c in commands(ROOT / "README.md") if c.startswith("python train.py"))
    args = shlex.split(quick_start)[2:] + SHRINK["train.py"]
    args += smoke_sizes(args)
    result = run_train(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout + result.stderr
    assert [m for m in LIGHTNING_MESSAGES if m in shown] == []
    assert long_numbers(shown) == []
    (log,) = tmp_path.glob("outputs/*/runs/*/train.log")
    assert "`Trainer.fit` stopped" in log.read_text()
