"""train.py as a user runs it: every experiment composes and builds, CBoW runs end to end, and bad
input fails early with one line that names the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, TINY_GPT, load_script, run_in_process, run_train, smoke_sizes
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from llm_lab.app.resolvers import register_resolvers
from llm_lab.config import as_config_error, build
from llm_lab.errors import ArgumentError, ConfigError, ConfigErrors

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# The values an experiment asks its user for (``???`` in its file), as its header comment gives them.


def readme_table_commands() -> list[list[str]]:
    """The experiments of README's table of stages, in table order (the learning path), each with
    the overrides its cell gives (``gpt model=llama``)."""
    commands = []
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = (
            [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            if line.startswith("| ")
            else []
        )
        if len(cells) >= 4 and cells[0].isdigit():
            for cell in re.findall(r"`([^`]+)`", cells[2]):
                name, *overrides = cell.split()
                commands.append([f"experiment={name}", *overrides])
    return commands


def test_every_stage_of_readmes_table_runs_in_table_order_as_written(tmp_path: Path):
    """README: "Every stage runs as `python train.py experiment=NAME`; add `debug=fast` for a
    few-step smoke run". Run from one folder in the table's order, as a learner walks the path, a
    later stage finds what an earlier one made (cbow_embedding starts from the cbow run's vectors)."""
    commands = readme_table_commands()
    names = [c[0].removeprefix("experiment=") for c in commands]
    assert names[:2] == ["simple_tokenizer", "bpe"] and set(names) == set(EXPERIMENTS), names
    for command in commands:
        proc = run_train(*command, "debug=fast", *smoke_sizes(command), cwd=tmp_path)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        name = command[0].removeprefix("experiment=")
        assert list((tmp_path / "outputs" / name / "runs").glob("*/metrics.json")), command
    config = next((tmp_path / "outputs" / "cbow_embedding" / "runs").glob("*/.hydra/config.yaml"))
    assert "embeddings: cbow" in config.read_text()  # the name, resolved to the file when built


def _scalar_tags(event_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"]) | {f"text:{t}" for t in acc.Tags().get("tensors", [])}


@pytest.mark.slow
def test_cbow_runs_end_to_end_and_tensorboard_has_everything(tmp_path: Path):
    run = tmp_path / "run"
    proc = run_train(
        "experiment=cbow",
        "corpus.max_documents=60",
        "data.batch_size=128",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=5",
        "model.embed_dim=16",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    vectors = (run / "vectors.txt").read_text().splitlines()
    n, dim = map(int, vectors[0].split())
    assert dim == 16 and n == len(vectors) - 1 > 100
    tags = _scalar_tags(run / "tensorboard")
    wanted = ("loss/train", "loss/val", "val/mean_cosine", "throughput/words_per_sec", "loss/test")
    for tag in (*wanted, "lr/HandWrittenUpdate"):
        assert tag in tags, (tag, tags)
    assert "text:embeddings/nearest_neighbours/text_summary" in tags
    projector = run / "tensorboard" / "projector_config.pbtxt"
    assert projector.is_file() and "word_vectors" in projector.read_text()
    assert list((run / "tensorboard").glob("*/*/tensors.tsv")) and list(
        (run / "tensorboard").glob("*/*/metadata.tsv")
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/loss"] > 0 and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()


def _fails(proc, key: str, run: Path) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and key in last, last
    assert not (run / "metrics.json").exists() and (run / "FAILED").is_file()
    # The run folder says why the run stopped, for whoever reads it later.
    assert (run / "train.log").read_text().rstrip().endswith(f"[ERROR] {last}")


def refused(tmp_path: Path, *overrides: str) -> list[str]:
    """The keys ``train(cfg)`` refuses for the config of ``overrides``, composed as train.py composes
    it and run in this process: a bad value stops the run before it trains (most before anything is
    read or built, in the preflight), naming its key."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*overrides, f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}"]
        )
    with pytest.raises((ConfigError, ConfigErrors, ArgumentError)) as caught:
        load_script("train.py").train(cfg)
    err = caught.value
    if isinstance(err, ArgumentError):  # raised once fit began: the shell names its key the same way
        err = as_config_error(err, cfg)
    return err.keys if isinstance(err, ConfigErrors) else [err.key]


def test_the_command_line_says_a_bad_value_in_one_line_with_exit_code_2(tmp_path: Path):
    proc = run_train(
        "experiment=cbow", "corpus.max_documents=20", "data.window=0", f"hydra.run.dir={tmp_path}"
    )
    _fails(proc, "data.window", tmp_path)


def test_three_independent_mistakes_are_named_at_once_before_any_work(tmp_path: Path):
    """One error naming all three keys, exit code 2, before the corpus is read (no tokenizer in the
    cache, no prepared ids): the preflight collects every problem instead of stopping at the first."""
    mistakes = ["model.net.n_head=0", "optimizer.lr=-1", "data.batch_size=0"]
    proc = run_train("experiment=gpt", *mistakes, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()[-3:]
    assert sorted(line.split(":")[1].strip() for line in lines) == sorted(m.split("=")[0] for m in mistakes)
    assert all(line.startswith("error: ") for line in lines)
    assert not (tmp_path / "outputs" / "cache").exists()  # nothing was trained or prepared


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.window=0", "data.window"),
        ("data.min_count=100000", "data.min_count"),
        ("model.embed_dim=-3", "model.embed_dim"),
        ("corpus.path=/no/such/file.txt", "corpus.path"),
        ("data.num_workers=2", "data.num_workers"),
        # torch.optim's own checks, tried before anything is built, under the key they speak of
        ("optimizer=adamw optimizer.lr=-1", "optimizer.lr"),
        ("optimizer=adamw optimizer.betas=[2,0]", "optimizer.betas"),
        ("optimizer=adamw optimizer.eps=-1", "optimizer.eps"),
        ("optimizer=adamw optimizer.weight_decay=-1", "optimizer.weight_decay"),
        ("optimizer.lr=-1", "optimizer.lr"),  # word2vec's SGD (optimizer=word2vec)
        ("scheduler.min_lr_ratio=2", "scheduler.min_lr_ratio"),
        # a word where a number belongs, caught from the target's signature before it is built
        ("model.embed_dim=abc", "model.embed_dim"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("data.batch_size=x", "data.batch_size"),
        # the top-level keys train.py reads itself (train.SETTINGS)
        ("train=flase", "train"),
        ("test=maybe", "test"),
        ("seed=abc", "seed"),
        ("seed=-1", "seed"),
        ("torch_threads=abc", "torch_threads"),
        ("torch_threads=0", "torch_threads"),
        ("progress_every_n_steps=0", "progress_every_n_steps"),
        ("optimized_direction=up", "optimized_direction"),
        # a value Lightning itself refuses, in its own words, under the node's name
        ("trainer.devices=two", "trainer.devices"),
        ("trainer.max_time=garbage", "trainer.max_time"),
    ],
)
def test_a_bad_value_is_refused_under_its_key(override: str, key: str, tmp_path: Path):
    # experiment=cbow trains by word2vec's SGD; optimizer=adamw brings torch's optimizer.
    assert refused(tmp_path, "experiment=cbow", "corpus.max_documents=20", *override.split()) == [key]


# The hostile tester's base command: a GPT run of 3 steps on 20 documents.
GPT_3_STEPS = [
    "experiment=gpt",
    "trainer.max_steps=3",
    "corpus.max_documents=20",
    "trainer.limit_val_batches=2",
]
# The same three steps on the tiny GPT, with debug=fast's short end-of-run reports: for the tests
# that train (the bad values above are refused before anything is built).
TINY_3_STEPS = [*TINY_GPT, "debug=fast", "trainer.max_steps=3"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        # tokens between two windows would never be trained on (gpt.yaml's stride is 64)
        ("data.stride=1000", "data.stride"),
        ("data.max_tokens=10", "data.max_tokens"),
        ("corpus.val_fraction=0.99", "corpus.val_fraction"),
        # library checks, each with its fix
        ("model.net.n_head=0", "model.net.n_head"),
        ("model.net.dropout=1.5", "model.net.dropout"),
        ("data.num_proc=0", "data.num_proc"),
        # nothing to evaluate: the weights would be random
        ("train=false", "ckpt_path"),
        # a run that can take no step, or whose settings Lightning divides by
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
        ("trainer.max_time={minutes:-5}", "trainer.max_time"),
        ("trainer.max_time=00:00:00:00", "trainer.max_time"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval"),
        ("trainer.limit_val_batches=0", "trainer.limit_val_batches"),
        # null where a number belongs (the key gpt.yaml's stride follows included)
        ("data.batch_size=null", "data.batch_size"),
        ("data.context_length=null", "data.context_length"),
        ("optimizer.lr=null", "optimizer.lr"),
        ("trainer.max_steps=null", "trainer.max_steps"),
        ("seed=null", "seed"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ],
)
def test_a_bad_gpt_value_is_refused_under_its_key(override: str, key: str, tmp_path: Path):
    assert refused(tmp_path, *GPT_3_STEPS, override) == [key]


def test_a_warm_up_longer_than_the_run_is_one_warning(tmp_path: Path):
    proc = run_train(*TINY_3_STEPS, "scheduler.warmup_steps=1000", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in proc.stdout.splitlines() if "scheduler.warmup_steps: 1000" in line]
    assert len(warned) == 1 and "3 optimizer steps" in warned[0], proc.stdout[-2000:]


def test_a_vocab_size_a_loaded_tokenizer_does_not_have_is_one_warning(tmp_path: Path):
    """tokenizer=hf loads a tokenizer as it is: a vocab_size setting that differs is said to be
    unused (it had been dropped without a word); an equal one, or none, says nothing."""
    first = tmp_path / "first"
    assert run_train(*TINY_3_STEPS, f"hydra.run.dir={first}").returncode == 0
    size = json.loads((first / "model_config.json").read_text())["config"]["vocab_size"]
    loaded = [*TINY_3_STEPS, "tokenizer=hf", f"tokenizer.path={first / 'tokenizer.json'}"]
    for vocab_size, said in ((5000, 1), (size, 0)):
        proc = run_train(
            *loaded, f"tokenizer.vocab_size={vocab_size}", f"hydra.run.dir={tmp_path / str(vocab_size)}"
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        warned = [line for line in proc.stdout.splitlines() if "is not used: the tokenizer loaded" in line]
        assert len(warned) == said and all(f"has {size} tokens" in line for line in warned), proc.stdout[
            -2000:
        ]


def test_a_value_the_config_asks_for_is_named_when_missing(tmp_path: Path):
    """``???`` left unset: Hydra would pass the string on (or keep the model's default) silently."""
    proc = run_train("experiment=cbow", "tokenizer=hf", f"hydra.run.dir={tmp_path}")
    _fails(proc, "tokenizer.path: needs a value (add tokenizer.path=...", tmp_path)


def test_a_stage_that_starts_from_an_earlier_run_names_the_command_that_makes_one(tmp_path: Path):
    """cbow_embedding reads the newest finished cbow run's vectors: with none, one line says to run
    experiment=cbow first (it used to stop on a value the user had to find)."""
    proc = run_train("experiment=cbow_embedding", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    _fails(proc, "model.net.embeddings: no finished experiment=cbow run", tmp_path / "run")
    assert "run python train.py experiment=cbow first" in proc.stderr


@pytest.mark.parametrize(
    ("choice", "named"),
    [
        (["tokenizer=simple"], "tokenizer.vocab_size: is not a setting"),
        (
            ["tokenizer=bpe", "tokenizer.kind=simple"],
            "tokenizer.vocab_size, tokenizer.special_tokens: are not settings",
        ),
    ],
)
def test_settings_of_another_tokenizer_kind_are_named_at_once_with_a_fix_that_works(
    tmp_path: Path, choice: list[str], named: str
):
    """experiment=gpt sets tokenizer.vocab_size (and bpe its special tokens); the word tokenizer has
    no such settings. All are named in one line, the fix is the command-line words that remove
    them, and following it trains."""
    command = ["experiment=gpt", *choice, "debug=fast", "trainer.max_steps=1", "model.net.size=lab-tiny"]
    proc = run_train(*command, f"hydra.run.dir={tmp_path / 'a'}")
    _fails(proc, f"{named} of the simple tokenizer (it takes strict,", tmp_path / "a")
    fix = re.search(r"\(remove (?:it|them): (.+) on the command line\)$", proc.stderr.strip())
    assert fix is not None, proc.stderr[-500:]
    proc = run_train(*command, *fix.group(1).split(), f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 0 and (tmp_path / "b" / "metrics.json").is_file(), proc.stderr[-2000:]


def test_bad_corpus_files(tmp_path: Path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    proc = run_train("experiment=cbow", f"corpus.path={latin}", f"hydra.run.dir={tmp_path / 'a'}")
    _fails(proc, "UTF-8", tmp_path / "a")
    short = tmp_path / "short.txt"
    short.write_text("just a few words here\n" * 2)
    proc = run_train(
        "experiment=cbow", f"corpus.path={short}", "data.min_count=1", f"hydra.run.dir={tmp_path / 'b'}"
    )
    _fails(proc, "data.window", tmp_path / "b")


def test_unknown_experiment_lists_the_available_ones(tmp_path: Path):
    proc = run_train("experiment=nope", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert "cbow" in proc.stderr and "experiment" in proc.stderr


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "trainer").glob("*.yaml")))
def test_every_trainer_config_composes_and_its_strategy_builds(name: str, tmp_path: Path):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"trainer={name}", f"hydra.run.dir={tmp_path}"], return_hydra_config=True
        )
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, DictConfig):  # e.g. FSDP: the strategy object itself must build
        built = instantiate(strategy)
        assert type(built).__name__ == "FSDP2Strategy"
        assert [c.__name__ for c in built.shard_classes] == ["Block"]
    elif cfg.trainer.accelerator == "cpu":  # CPU trainers build here, as train.py builds them
        trainer = build(cfg.trainer, cfg, callbacks=[], logger=False, default_root_dir=str(tmp_path))
        assert trainer.default_root_dir == str(tmp_path)


def test_logger_none_runs_without_any_logger(tmp_path: Path):
    metrics = run_in_process(
        tmp_path / "run", "cbow", "logger=none", "corpus.max_documents=30", "trainer.max_epochs=1"
    )
    assert metrics["val/loss"] > 0 and not (tmp_path / "run" / "tensorboard").exists()


def test_ckpt_path_last_starts_fresh_then_resumes(tmp_path: Path):
    """The command a cluster relaunches after pre-emption: the first time there is nothing to resume
    (said in a line, not Lightning's warning about ModelCheckpoint), the second time it resumes."""
    import torch

    run = ["experiment=perceptron", "data.name=xor", f"hydra.run.dir={tmp_path}", "ckpt_path=last"]
    first = run_train(*run, "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"ckpt_path=last: no checkpoint in {tmp_path} yet" in first.stdout + first.stderr
    assert "save_last" not in first.stdout + first.stderr
    steps = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    second = run_train(*run, "trainer.max_epochs=2")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Restored all states from the checkpoint" in second.stdout + second.stderr
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * steps


def test_time_limit_reads_the_forms_lightning_takes():
    from datetime import timedelta

    from omegaconf import OmegaConf

    from llm_lab.app.train_checks import time_limit

    assert time_limit("00:01:30:00") == timedelta(hours=1, minutes=30)
    assert time_limit(OmegaConf.create({"minutes": -5})) == timedelta(minutes=-5)
    assert time_limit(timedelta(seconds=3)) == timedelta(seconds=3)
    # unset, or a form Lightning itself will refuse in its own words
    assert time_limit(None) is None and time_limit("soon") is None and time_limit({"weeks": "x"}) is None


def test_gpt_windows_overlap_by_half_whatever_their_length():
    """Changing data.context_length alone keeps gpt.yaml's stride valid (it follows, at half)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=gpt", "data.context_length=32"])
    assert (cfg.data.context_length, cfg.data.stride) == (32, 16)


def test_a_group_set_to_null_is_one_line_naming_it_with_the_way_to_drop_it(tmp_path: Path):
    proc = run_train(
        "experiment=perceptron", "debug=fast", "optimizer=null", f"hydra.run.dir={tmp_path / 'a'}"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: optimizer=null: a config group takes one of its options, not null"), line
    assert "(to run without it: ~optimizer;" in line and "--help lists the options" in line
    # The way out it gives runs (the perceptron learns without an optimizer).
    proc = run_train("experiment=perceptron", "debug=fast", "~optimizer", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
