"""Bad files, impossible settings, faults and hostile run folders: one clear line (exit code 2, the key
or file named with the fix), nothing lost, nothing executed. Grouped by class: data, config,
checkpoints, run folders, generation, faults."""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY_GPT, WORKDIR, command, run_train

from llm_lab.app.overrides import command_word
from llm_lab.app.run_folder import claim, unused_folder
from llm_lab.data.instruct_rows import read_hf_examples
from llm_lab.data.labelled import read_labelled
from llm_lab.data.preference import hub_pairs
from llm_lab.errors import ArgumentError, DataError, DivergedError, StorageError
from llm_lab.eval.multiple_choice import read_hub_choices
from llm_lab.lit.checkpoint_io import AtomicCheckpointIO
from llm_lab.models.gpt import GPT as GPTModel
from llm_lab.models.gpt import GPTConfig
from llm_lab.models.hf import save_hf
from llm_lab.run_dir import checkpoint_path

GPT = [*TINY_GPT, "trainer.max_steps=4", "callbacks.text_samples=null"]


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The run failed with exit code 2 and one ``error:`` line (no traceback) holding ``words``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for word in words:
        assert word in last, (word, last)
    return last


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return run_train(*args, script="generate.py", timeout=120)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny GPT run: 4 steps, checkpoints, tokenizer.json."""
    run = tmp_path_factory.mktemp("gpt") / "run"
    proc = run_train(*GPT, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


# ------------------------------------------------------------------------------------------ data
def test_utf16_text_without_a_byte_order_mark_is_refused_with_the_conversion(tmp_path: Path):
    text = tmp_path / "utf16.txt"
    text.write_bytes(("The function returns a list.\n" * 200).encode("utf-16-le"))
    proc = run_train("experiment=bpe", f"corpus.path={text}", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(proc, str(text), "UTF-16LE", "iconv -f UTF-16LE -t UTF-8")


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_with_a_byte_order_mark_is_named_with_its_conversion(tmp_path: Path, encoding: str):
    (tmp_path / "corpus").mkdir()
    text = tmp_path / "corpus" / "notes.txt"
    text.write_bytes(("\ufeff" + "The function returns a list.\n" * 200).encode(encoding))
    proc = run_train("experiment=bpe", f"corpus.path={text.parent}", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(proc, f"{text}: UTF-16", f"iconv -f UTF-16 -t UTF-8 {text} > {text}.utf8.txt")


def test_text_in_a_western_code_page_is_named_with_its_likely_encoding(tmp_path: Path):
    text = tmp_path / "livro.txt"
    text.write_bytes("A ação não é difícil: é só começar.\n".encode("cp1252") * 50)
    proc = run_train("experiment=bpe", f"corpus.path={text}", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(proc, f"{text}: not UTF-8", "CP1252", f"iconv -f CP1252 -t UTF-8 {text} > {text}.utf8.txt")


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path, monkeypatch):
    from llm_lab.data.corpus import read_text

    locked = tmp_path / "locked.txt"
    locked.write_text("some text")

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)  # root reads any file: simulate the refusal
    with pytest.raises(DataError, match=f"{locked} cannot be read \\(Permission denied\\)"):
        read_text(locked)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (os.urandom(4000), ["not a word2vec text file"]),
        (b"2 3\nthe 0.1 0.2 zero\nof 0.1 0.2 0.3\n", [":2:", "non-number"]),
        (b"2 3\nthe 0.1 nan 0.3\nof 0.1 0.2 0.3\n", [":2:", "NaN or infinity"]),
        (b"3 3\nthe 0.1 0.2 0.3\n", ["header says 3 words", "truncated"]),
    ],
    ids=["random-bytes", "non-number", "nan", "truncated"],
)
def test_unusable_word_vectors_are_one_line_naming_the_file(tmp_path: Path, content: bytes, words: list[str]):
    vectors = tmp_path / "vectors.txt"
    vectors.write_bytes(content)
    proc = run_train(
        "experiment=cbow_embedding",
        f"model.net.embeddings={vectors}",
        "model.net.d_model=3",
        "model.net.num_heads=1",
        "corpus.max_documents=10",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    line = one_line_error(proc, str(vectors), *words)
    assert len(line) < 400  # the file's bytes are not dumped


# ---------------------------------------------------------------------------------------- config
def named_keys(proc: subprocess.CompletedProcess[str]) -> tuple[list[str], str]:
    """The keys the one error line names (``error: KEY: ...; KEY: ...``), and its fix: the text in
    its last parentheses, what the user is told to type."""
    line = one_line_error(proc)
    fix = re.search(r"\(([^()]*)\)$", line)
    return re.findall(r"(?:^error: |; )([^\s:;]+):", line), fix.group(1) if fix else line


# What the user typed; the keys the error names; a word of the fix (or of the problem, where the
# problem itself says what to type: the closest key, the options there are).
@pytest.mark.parametrize(
    ("override", "keys", "typed"),
    [
        ("trainer.max_step=5", ["trainer.max_step"], "trainer.max_steps"),
        ("data.path=README.md", ["data.path"], "corpus.path="),  # moved to the corpus group
        ("optimizer=adam", ["optimizer=adam"], "adamw"),
        ("trainer.max_steps=0", ["trainer.max_steps"], "-1"),
        ("trainer=gpu", ["trainer.accelerator"], "trainer=cpu"),
        ("trainer=ddp", ["trainer.accelerator"], "trainer=ddp_cpu"),
        ("callbacks.text_samples.every_n_steps=0", ["callbacks.text_samples.every_n_steps"], "100"),
        ("scheduler.warmup_start=half", ["scheduler.warmup_start"], "one_step"),
        ("model.net.context_length=8", ["data.context_length"], "model.net.context_length"),
        ("tokenizer.min_count=2", ["tokenizer.min_count"], "tokenizer=simple"),
        ("~model.net.size tokenizer.vocab_size=9 model.net.size=a", ["model.net.size"], "leave one"),
        ("foo.bar=1 trainer.max_stepz=1", ["foo.bar", "trainer.max_stepz"], "--cfg job"),
        ("~tokenizer.vocab_size", ["tokenizer.vocab_size"], "give it one"),
    ],
)
def test_impossible_settings_are_one_line_with_the_way_out(
    tmp_path: Path, override: str, keys: list[str], typed: str
):
    if "trainer=" in override and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = run_train("experiment=gpt", *override.split(), f"hydra.run.dir={tmp_path / 'run'}")
    named, fix = named_keys(proc)
    assert named == keys and typed in proc.stderr.strip().splitlines()[-1], (named, fix)


def test_a_value_lightning_refuses_only_at_fit_is_one_line_under_its_key(tmp_path: Path):
    """Lightning checks val_check_interval against the epoch's batches only once fit has begun."""
    run = tmp_path / "run"
    proc = run_train("experiment=cbow", "debug=fast", "trainer.val_check_interval=50", f"hydra.run.dir={run}")
    line = one_line_error(proc, "trainer.val_check_interval: 50 is more than the 5 training batches")
    assert (run / "FAILED").is_file() and (run / "train.log").read_text().rstrip().endswith(line)


@pytest.mark.parametrize(
    ("word", "key", "typed"),
    [
        ("+new_key=1", "new_key", "leave +new_key=1 off"),
        ("+paths.log_dri=1", "paths.log_dri", "paths.log_dir"),
        ("+data.batch_sise=3", "data.batch_sise", "batch_size"),
        ("+optimizer.foo=1", "optimizer.foo", "leave +optimizer.foo=1 off"),
        ("+model.net.foo=1", "model.net", "leave +model.net.foo=1 off"),
        ("+callbacks.foo=1", "callbacks.foo", "leave +callbacks.foo=1 off"),
        ("+logger.foo=1", "logger.foo", "leave +logger.foo=1 off"),
        ("model=[]", "model", "--help"),
        ("data=[]", "data", "--help"),
        ("~tokenizer", "tokenizer", "--help"),
    ],
)
def test_a_key_nothing_reads_or_a_group_left_empty_is_one_line(
    tmp_path: Path, word: str, key: str, typed: str
):
    """Hydra lets ``+key=value`` add any key and ``group=[]`` pick no option; the lab says which
    key nothing would read (before: run silently, or a TypeError deep inside), before any work."""
    run = tmp_path / "run"
    proc = run_train("experiment=cbow", "debug=fast", word, f"hydra.run.dir={run}")
    assert named_keys(proc)[0] == [key] and typed in proc.stderr.strip().splitlines()[-1]
    assert (run / "FAILED").is_file() and not (run / "checkpoints").exists()


def test_generate_py_names_tokenizer_path_when_its_file_is_wrong(gpt_run: Path, tmp_path: Path):
    one_line_error(
        generate(f"ckpt_path={gpt_run}", f"tokenizer_path={tmp_path}"), "tokenizer_path: ", "is a folder"
    )


def test_generate_py_refuses_a_key_nothing_reads_before_loading_anything():
    one_line_error(
        generate("+temprature=0.5", "ckpt_path=/nowhere"), "temprature: no part", "mean temperature?"
    )


def test_additions_something_reads_and_empty_optional_groups_still_run(tmp_path: Path):
    """A callback added as a node of its own is built and used; a key forced with ++ is set; a run
    with no logger at all (logger=[]) writes no dashboard."""
    run, extra = tmp_path / "run", tmp_path / "extra"
    added = [
        "+callbacks.ckpt2._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        f"+callbacks.ckpt2.dirpath={extra}",
    ]
    proc = run_train("experiment=mlp", "debug=fast", *added, "++seed=3", "logger=[]", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        list(extra.glob("*.ckpt")) and (run / "metrics.json").is_file() and not (run / "tensorboard").exists()
    )
    assert "seed: 3" in (run / ".hydra" / "config.yaml").read_text().splitlines()
    # No callbacks at all, on a stage whose experiment tunes one (the decision boundary plot), and
    # neither tokenizer nor optimizer, which the perceptron does without.
    bare = run_train(
        "experiment=perceptron",
        "debug=fast",
        "callbacks=[]",
        "~tokenizer",
        "~optimizer",
        f"hydra.run.dir={tmp_path / 'bare'}",
    )
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert (tmp_path / "bare" / "metrics.json").is_file() and not (tmp_path / "bare" / "checkpoints").exists()


# ----------------------------------------------------------------------------------- checkpoints
def test_a_truncated_or_foreign_checkpoint_is_named(gpt_run: Path, tmp_path: Path):
    good = gpt_run / "checkpoints" / "last.ckpt"
    truncated, foreign = tmp_path / "truncated.ckpt", tmp_path / "foreign.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign.write_bytes(b"not a checkpoint at all" * 100)
    for bad in (truncated, foreign):
        (tmp_path / bad.stem).mkdir()
        proc = run_train(*GPT, f"ckpt_path={bad}", cwd=tmp_path / bad.stem)
        one_line_error(proc, str(bad), "not a readable checkpoint")
        # Said before the corpus is tokenized or prepared: no cache was made.
        assert not (tmp_path / bad.stem / "outputs" / "cache").exists()


def test_a_missing_checkpoint_is_refused_before_the_corpus_is_read(tmp_path: Path):
    missing = tmp_path / "runs" / "last.ckpt"
    proc = run_train(*GPT, f"ckpt_path={missing}", cwd=tmp_path)
    one_line_error(proc, f"ckpt_path: no checkpoint at {missing}")
    # Nothing was tokenized or prepared: the cache (tokenizers, prepared shards) was never made.
    assert not (tmp_path / "outputs" / "cache").exists()


def test_a_resume_that_would_train_nothing_or_on_other_ids_is_refused(gpt_run: Path, tmp_path: Path):
    """max_steps below the checkpoint's step (Lightning would stop at once and call it done);
    other data settings, which train another tokenizer: the checkpoint's ids would mean other tokens.
    Both said before anything is trained, and the run folder keeps its tokenizer."""
    saved = (gpt_run / "tokenizer.json").read_bytes()
    resume = [f"ckpt_path={gpt_run}", f"hydra.run.dir={gpt_run}"]
    proc = run_train(*GPT, "trainer.max_steps=3", *resume)
    one_line_error(
        proc, "trainer.max_steps: 3, and", "is at step 4 already", "raise trainer.max_steps above 4"
    )
    proc = run_train(*GPT, "corpus.max_documents=12", "trainer.max_steps=6", *resume)
    one_line_error(proc, "ckpt_path:", f"was trained with {gpt_run / 'tokenizer.json'}", "another tokenizer")
    assert (gpt_run / "tokenizer.json").read_bytes() == saved


def test_a_checkpoint_of_another_model_size_names_the_settings_that_differ(gpt_run: Path, tmp_path: Path):
    proc = run_train(
        *GPT,
        "model.net.n_embd=32",
        "trainer.max_steps=6",
        f"ckpt_path={gpt_run}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    one_line_error(proc, "was made for another model", "n_embd=64 there, 32 here")


def test_a_diverged_step_is_never_saved_nor_called_good(tmp_path: Path):
    """lr=1e6 with a checkpoint after every step: the weights turn NaN in an update whose loss was
    still finite; that checkpoint must not replace the good one, and the message names the good one."""
    run = tmp_path / "run"
    args = [*GPT, "trainer.max_steps=8", "callbacks.model_checkpoint.every_n_train_steps=1"]
    proc = run_train(*args, "optimizer.lr=1e6", "trainer.gradient_clip_val=null", f"hydra.run.dir={run}")
    line = one_line_error(proc, "NaN or infinite", "last good one is", "last.ckpt")
    assert (run / "FAILED").is_file()
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert f"last.ckpt (step {saved['global_step']})" in line
    tensors = list(saved["state_dict"].values())
    for optimizer in saved["optimizer_states"]:
        tensors += [t for state in optimizer["state"].values() for t in state.values() if torch.is_tensor(t)]
    assert len(tensors) > 20 and all(torch.isfinite(t).all() for t in tensors)


def test_a_successful_rerun_removes_the_failed_marker(tmp_path: Path):
    run = tmp_path / "run"
    failed = run_train(*GPT, "trainer.max_steps=0", f"hydra.run.dir={run}")
    one_line_error(failed, "trainer.max_steps")
    assert (run / "FAILED").is_file()
    again = run_train(*GPT, f"hydra.run.dir={run}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (run / "FAILED").exists() and (run / "metrics.json").is_file()


def test_non_finite_weights_are_refused_by_the_writer_itself(tmp_path: Path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 3, "state_dict": {"w": torch.ones(2)}}, tmp_path / "last.ckpt")
    poisoned = {"global_step": 4, "state_dict": {"w": torch.tensor([1.0, float("nan")])}}
    with pytest.raises(DivergedError, match=r"last\.ckpt \(step 3\)"):
        io.save_checkpoint(poisoned, tmp_path / "last.ckpt")
    assert io.load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 3


# ----------------------------------------------------------------------------------- run folders
def test_a_run_folder_of_another_experiment_is_refused_untouched(tmp_path: Path):
    """Not even offered to resume: the folder's snapshot, marker and results stay the first run's."""
    run = tmp_path / "shared"
    assert run_train("experiment=perceptron", "debug=fast", f"hydra.run.dir={run}").returncode == 0
    snapshot = (run / ".hydra" / "config.yaml").read_text()
    for resume in ([], [f"ckpt_path={run}"]):
        proc = run_train("experiment=mlp", "debug=fast", f"hydra.run.dir={run}", *resume)
        line = one_line_error(proc, f"{run} holds an experiment=perceptron run, not experiment=mlp")
        assert "ckpt_path" not in line
    assert (run / ".hydra" / "config.yaml").read_text() == snapshot and not (run / "FAILED").exists()


def take_the_coming_seconds(folder: Path, inside: str) -> list[Path]:
    """Folders named for each second a run started now can be named for, as another run left them."""
    now = datetime.datetime.now()
    taken = [folder / (now + datetime.timedelta(seconds=s)).strftime("%Y-%m-%d_%H-%M-%S") for s in range(120)]
    for run in taken:
        (run / inside).mkdir(parents=True)
        (run / inside / "metrics.json").write_text("{}")
    return taken


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "grid sweep"])
def test_runs_started_within_one_second_get_a_folder_each(tmp_path: Path, sweep: bool):
    """Default folders are named to the second; another run or sweep (a second terminal, a script)
    that took this second's name is left alone and this one writes beside it, in ``<time>_2``. The
    chosen name reaches every job of a sweep, and a path with a space and a quote survives."""
    cwd = tmp_path / "my lab's"
    folder = cwd / "outputs" / "perceptron" / ("multiruns" if sweep else "runs")
    taken = take_the_coming_seconds(folder, "0" if sweep else ".")
    before = sorted(folder.rglob("*"))
    args = ["-m", "experiment=perceptron", "seed=1,2"] if sweep else ["experiment=perceptron"]
    proc = run_train(*args, "debug=fast", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (mine,) = (run for run in folder.iterdir() if run not in taken)
    assert mine.name.endswith("_2") and mine.with_name(mine.name.removesuffix("_2")) in taken
    for job in [mine / "0", mine / "1"] if sweep else [mine]:
        assert (job / "checkpoints").is_dir() and f"run folder: {job.relative_to(cwd)}" in proc.stdout
    assert sorted(path for path in folder.rglob("*") if mine not in (path, *path.parents)) == before


def test_the_resume_hint_for_an_odd_folder_name_works_as_printed(tmp_path: Path):
    """A folder name with a comma, an equals sign, a space and a quote: the hint is one shell word
    that Hydra reads back as the folder."""
    run = tmp_path / "a,b=c it's"
    args = ["experiment=mlp", "debug=fast", "trainer.max_steps=2", command_word("hydra.run.dir", str(run))]
    assert run_train(*shlex.split(" ".join(args))).returncode == 0
    line = one_line_error(run_train(*shlex.split(" ".join(args))), "holds another run")
    hint = re.search(r"resume it with (.+), or choose a new hydra.run.dir", line)
    assert hint is not None, line
    resumed = run_train(*shlex.split(" ".join([*args[:2], "trainer.max_steps=4", args[3], hint.group(1)])))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())


def test_a_grid_sweep_into_a_folder_holding_an_earlier_sweep_is_refused_untouched(tmp_path: Path):
    sweep = tmp_path / "mysweep"
    first = run_train("-m", "experiment=perceptron", "seed=1,2", "debug=fast", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {path: path.read_bytes() for path in sweep.rglob("*") if path.is_file()}
    again = run_train("-m", "experiment=perceptron", "seed=3,4", "debug=fast", f"hydra.sweep.dir={sweep}")
    one_line_error(again, f"hydra.sweep.dir: {sweep} holds an earlier run or sweep", "new hydra.sweep.dir")
    assert {path: path.read_bytes() for path in sweep.rglob("*") if path.is_file()} == before
    # A single run's folder is no sweep folder either.
    single = tmp_path / "single"
    assert run_train("experiment=perceptron", "debug=fast", f"hydra.run.dir={single}").returncode == 0
    into = run_train("-m", "experiment=perceptron", "seed=3,4", "debug=fast", f"hydra.sweep.dir={single}")
    one_line_error(into, f"hydra.sweep.dir: {single} holds an earlier run or sweep")
    assert not (single / "0").exists()


def test_an_unused_folder_is_made_once_and_never_handed_out_twice(tmp_path: Path):
    base = tmp_path / "runs" / "2026-01-01_00-00-00"
    first, second, third = (unused_folder(base) for _ in range(3))
    assert [first, second, third] == [base, *(base.with_name(f"{base.name}_{n}") for n in (2, 3))]
    assert all(folder.is_dir() for folder in (first, second, third))


def test_a_folder_holding_another_run_is_refused_unless_resuming_it(gpt_run: Path, tmp_path: Path):
    run = tmp_path / "copy"
    shutil.copytree(gpt_run, run)
    before = (run / ".hydra" / "config.yaml").read_text()
    proc = run_train(*GPT, "seed=7", f"hydra.run.dir={run}")
    one_line_error(proc, f"{run} holds another run", f"ckpt_path={run}", "new hydra.run.dir")
    assert (run / ".hydra" / "config.yaml").read_text() == before  # refused before Hydra wrote anything
    assert not list((run / "checkpoints").glob("last-v*.ckpt"))


@pytest.mark.slow
def test_two_runs_at_once_on_one_folder_the_second_is_refused(tmp_path: Path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen(
        command("train.py", *TINY_GPT, "trainer.max_steps=400", f"hydra.run.dir={run}"),
        cwd=WORKDIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "tokenizer.json").exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        second = run_train(*TINY_GPT, "trainer.max_steps=4", f"hydra.run.dir={run}")
        one_line_error(second, f"{run} is in use by another run")
    finally:
        first.kill()
        first.wait()


def test_files_written_atomically_get_the_mode_of_any_file_under_the_umask(tmp_path: Path):
    umask = os.umask(0o027)  # group may read, others nothing: neither the default nor mkstemp's 0600
    try:
        proc = run_train(*GPT, "trainer.max_steps=2", cwd=tmp_path)
    finally:
        os.umask(umask)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modes = {
        str(f.relative_to(tmp_path)): oct(f.stat().st_mode & 0o777)
        for f in (tmp_path / "outputs").rglob("*")
        if f.is_file()
    }
    # The checkpoints and the cached tokenizer are the files written by temporary file and rename.
    assert any(name.endswith("checkpoints/last.ckpt") for name in modes), modes
    assert any(name.startswith("outputs/cache/tokenizers/") for name in modes), modes
    assert {name: mode for name, mode in modes.items() if mode != oct(0o640)} == {}


def test_resuming_a_folder_takes_its_newest_checkpoint_and_a_killed_save_is_cleared(
    gpt_run: Path, tmp_path: Path
):
    run = tmp_path / "run"
    shutil.copytree(gpt_run, run)
    checkpoints = run / "checkpoints"
    older = torch.load(checkpoints / "last.ckpt", weights_only=True)
    older["global_step"] = 2
    torch.save(older, checkpoints / "last.ckpt")  # last.ckpt from an older attempt, step 2
    shutil.copy(gpt_run / "checkpoints" / "last.ckpt", checkpoints / "last-v1.ckpt")  # step 4
    assert checkpoint_path(run) == checkpoints / "last-v1.ckpt"
    (checkpoints / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")
    claim(run, str(run))
    assert not list(checkpoints.glob(".*.tmp"))


def test_a_run_folder_is_data_generate_py_never_executes_it(gpt_run: Path, tmp_path: Path):
    run = tmp_path / "hostile"
    shutil.copytree(gpt_run, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    config = (run / ".hydra" / "config.yaml").read_text()
    hostile = f"{{_target_: builtins.open, _args_: ['{victim}', w]}}"
    (run / ".hydra" / "config.yaml").write_text(config.replace("n_layer: null", f"n_layer: {hostile}"))
    proc = generate(f"ckpt_path={run}", "max_new_tokens=3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert victim.read_text() == "precious"
    # The checkpoint's own record of the model is checked too: only the lab's nets, plain values.
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["net"]["config"]["n_layer"] = {"_target_": "builtins.open", "_args_": [str(victim), "w"]}
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    one_line_error(generate(f"ckpt_path={run}"), "n_layer", "not a plain value")
    assert victim.read_text() == "precious"


# ------------------------------------------------------------------------------------ generation
def test_generate_py_names_a_corrupt_tokenizer_and_meaningless_settings(gpt_run: Path, tmp_path: Path):
    corrupt = tmp_path / "tokenizer.json"
    corrupt.write_text('{"model": {"type": "BPE", "vocab"')
    one_line_error(generate(f"ckpt_path={gpt_run}", f"tokenizer_path={corrupt}"), str(corrupt))
    one_line_error(generate(f"ckpt_path={gpt_run}", "max_new_tokens=-5"), "max_new_tokens")
    one_line_error(generate(f"ckpt_path={gpt_run}", "num_samples=0"), "num_samples")
    one_line_error(generate(f"ckpt_path={gpt_run}", "device=tpu"), "device: 'tpu' is not a device")
    if not torch.cuda.is_available():
        one_line_error(
            generate(f"ckpt_path={gpt_run}", "device=cuda"), "device: this machine has no cuda device"
        )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("use_cache=maybe", "use_cache: 'maybe' is not true or false (use_cache=true or use_cache=false)"),
        ("seed=abc", "seed: 'abc' is not an integer (e.g. seed=0)"),
        ("temperature=hot", "temperature: 'hot' is not a number"),
        ("top_k=0", "top_k: 0 < 1 (e.g. top_k=40, or null"),
        ("max_new_tokens=-5", "max_new_tokens: -5 < 1"),
    ],
)
def test_generate_py_checks_its_settings_before_loading_anything(override: str, expected: str):
    one_line_error(generate(override), expected)  # no model given: the settings are read first


def hf_folder(folder: Path) -> Path:
    """A Hugging Face model folder (config.json + model.safetensors) as the lab exports one, with no
    tokenizer: what a download of only the weights gives."""
    save_hf(GPTModel(GPTConfig(vocab_size=300, context_length=16, n_layer=1, n_head=2, n_embd=8)), folder)
    return folder


def test_generate_py_tells_a_run_folder_from_a_hugging_face_folder_and_from_neither(
    gpt_run: Path, tmp_path: Path
):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "ideas.txt").write_text("not a model")
    for key in ("ckpt_path", "hf_path"):
        one_line_error(
            generate(f"{key}={notes}"),
            f"{key}: {notes} is not a run folder (no checkpoints/ in it)",
            "outputs/<experiment>/runs/<time>",
            "config.json",
        )
    hf = hf_folder(tmp_path / "hf")
    one_line_error(
        generate(f"ckpt_path={hf}"), f"ckpt_path: {hf} is a Hugging Face model folder", f"hf_path={hf}"
    )
    one_line_error(
        generate(f"hf_path={gpt_run}"), f"hf_path: {gpt_run} is a train.py run folder", f"ckpt_path={gpt_run}"
    )
    # train.py resumes from run folders only, and says what one is.
    proc = run_train(*GPT, f"ckpt_path={notes}", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(proc, f"ckpt_path: {notes} is not a run folder", "outputs/<experiment>/runs/<time>")


def test_generate_py_names_tokenizer_path_when_the_model_has_no_tokenizer(gpt_run: Path, tmp_path: Path):
    hf = hf_folder(tmp_path / "hf")
    run = tmp_path / "run"
    shutil.copytree(gpt_run, run)
    (run / "tokenizer.json").unlink()
    for given, folder in ((f"hf_path={hf}", hf), (f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", run)):
        one_line_error(generate(given), f"tokenizer_path: no tokenizer.json beside the model in {folder}")
    # The option it names is the way out.
    proc = generate(f"hf_path={hf}", f"tokenizer_path={gpt_run / 'tokenizer.json'}", "max_new_tokens=2")
    assert proc.returncode == 0, proc.stderr[-2000:]


GPT2_CONFIG = {
    "model_type": "gpt2",
    "vocab_size": 50,
    "n_positions": 16,
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 8,
}


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (json.dumps(GPT2_CONFIG)[:40], ["config.json"]),
        ("\x00\x01\x02binary", ["config.json"]),
        (json.dumps({k: v for k, v in GPT2_CONFIG.items() if k != "n_layer"}), ["config.json", "n_layer"]),
        (json.dumps(GPT2_CONFIG | {"n_layer": "two"}), ["config.json", "n_layer"]),
    ],
    ids=["truncated", "binary", "missing-key", "wrong-type"],
)
def test_generate_py_names_what_is_wrong_in_a_hugging_face_folder(tmp_path: Path, config: str, words: list):
    (tmp_path / "config.json").write_text(config)
    (tmp_path / "model.safetensors").write_bytes(b"")
    one_line_error(generate(f"hf_path={tmp_path}"), *words)
    one_line_error(generate(f"hf_path={tmp_path / 'nowhere'}"), "nowhere")


# ---------------------------------------------------------------------------------------- faults
@pytest.mark.parametrize(
    ("where", "fix"),
    [
        ("hydra.run.dir", "(choose another: hydra.run.dir, paths.log_dir or paths.cache_dir)"),
        ("paths.cache_dir", "(choose another: paths.cache_dir)"),
        ("callbacks.model_checkpoint.dirpath", "callbacks.model_checkpoint.dirpath: could not write"),
    ],
)
def test_a_folder_that_cannot_be_made_is_one_line_naming_its_setting(tmp_path: Path, where: str, fix: str):
    """Made by Hydra before the run (the run folder), or found inside it, where the line names the
    one setting that put the file there and the run folder says why it stopped."""
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    run = blocker if where == "hydra.run.dir" else tmp_path / "run"
    overrides = [f"hydra.run.dir={run}"] + ([f"{where}={blocker / 'sub'}"] if run != blocker else [])
    experiment = "experiment=cbow" if where == "paths.cache_dir" else "experiment=perceptron"  # cbow caches
    proc = run_train(experiment, "debug=fast", *overrides)
    line = one_line_error(proc, str(blocker), fix)
    assert "Warning" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr
    if run != blocker:
        assert (run / "FAILED").read_text().strip() == line.removeprefix("error: ")
        assert (run / "train.log").read_text().rstrip().endswith(line) and not (run / "metrics.json").exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB filesystem (tmpfs, where the machine lets a test mount one), else None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays_intact(
    small_disk, tmp_path: Path, monkeypatch
):
    io = AtomicCheckpointIO()
    folder = small_disk or tmp_path
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(10)}}, folder / "last.ckpt")
    big = {"global_step": 2, "state_dict": {"w": torch.ones(1 << 19)}}  # 2 MiB: more than the disk
    if small_disk is None:  # no tmpfs here: a writer that fails the way a full disk does

        def full(obj: object, f: object, *args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError, match=r"could not write .*last\.ckpt.*intact: .*last\.ckpt \(step 1\)"):
        io.save_checkpoint(big, folder / "last.ckpt")
    monkeypatch.undo()
    assert io.load_checkpoint(folder / "last.ckpt")["global_step"] == 1
    assert [p.name for p in folder.iterdir()] == ["last.ckpt"]  # the temporary file is gone


def test_a_run_folder_named_with_a_dollar_variable_keeps_its_events_inside_itself(tmp_path: Path):
    """Lightning's TensorBoard logger expands ``$HOME`` in its folder: the events of a run folder
    literally named ``$HOME`` went to the user's home. They stay in the folder the run names."""
    run = tmp_path / "$HOME" / "run"
    proc = run_train("experiment=cbow", "debug=fast", "corpus.max_documents=20", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert not (Path.home() / "run").exists() and not (tmp_path / str(Path.home()).lstrip("/")).exists()


def test_a_hub_dataset_without_a_reachable_hub_is_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No hub (here: an endpoint on this machine where nothing listens) is said at once, with the
    way to run offline, instead of datasets' retries."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    proc = run_train("experiment=cbow", "corpus.hf_dataset=someone/some_texts", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: corpus.hf_dataset: ") and "127.0.0.1:9" in line and "corpus.path" in line


@pytest.mark.parametrize(
    ("read", "arg"),
    [
        (lambda name: read_hf_examples(name), "hf_dataset"),  # experiment=instruct
        (lambda name: hub_pairs(name), "hf_dataset"),  # experiment=dpo
        (lambda name: read_labelled(name), "path"),  # experiment=classify
        (lambda name: read_hub_choices(name), "tasks"),  # evaluate.py tasks=[hf:NAME]
    ],
    ids=["instruct", "dpo", "classify", "evaluate"],
)
def test_every_reader_of_a_hub_dataset_names_its_argument_when_the_hub_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch, read: Callable[[str], object], arg: str
):
    """The instruction, preference, labelled and multiple-choice readers share the corpus's rule:
    an ArgumentError naming the setting, not datasets' ConnectionError after its retries."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ArgumentError) as err:
        read("someone/some_rows")
    assert err.value.arg == arg and "127.0.0.1:9" in err.value.problem


def test_generate_py_says_which_checkpoint_step_and_tokenizer_it_loaded(gpt_run: Path):
    """The first line of a generation names what it continues with: the checkpoint and its step,
    the model's size and the tokenizer, as read from the run folder."""
    result = generate(f"ckpt_path={gpt_run}", "max_new_tokens=2")
    assert result.returncode == 0, result.stderr[-2000:]
    step = torch.load(gpt_run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    loaded = next(line for line in result.stderr.splitlines() if line.startswith("loaded "))
    assert f"checkpoints/last.ckpt (step {step})" in loaded, loaded
    assert str(gpt_run / "tokenizer.json") in loaded and " M parameters, " in loaded, loaded
