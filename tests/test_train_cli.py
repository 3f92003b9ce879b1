"""train.py as a user runs it: every experiment composes and builds, CBoW runs end to end, and bad
input fails early with one line that names the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, load_script, run_in_process, run_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from llm_lab.config import register_resolvers

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# The values an experiment asks its user for (``???`` in its file), as its header comment gives them.
ASKED = {"cbow_embedding": ["model.net.embeddings=null"]}


def shrink_data(cfg: DictConfig) -> None:
    """A few documents and a small BPE vocabulary: enough to build and run any stage quickly."""
    if "max_documents" in cfg.data:
        cfg.data.max_documents = 30
    if cfg.get("tokenizer") is not None and cfg.tokenizer.kind == "bpe":
        cfg.tokenizer.vocab_size = 300


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_builds(name: str, tmp_path: Path):
    """train.py's own steps build every experiment: corpus, tokenizer, DataModule, model, Trainer."""
    train_py = load_script("train.py")
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={name}",
                *ASKED.get(name, []),
                f"paths.output_dir={tmp_path}",
                f"paths.root_dir={tmp_path}",
            ],
        )
    shrink_data(cfg)
    corpus = tokenizer = None
    if cfg.get("tokenizer") is not None:
        corpus = train_py.read_corpus(cfg)
        tokenizer = train_py.make_tokenizer(cfg, corpus)
        assert tokenizer.vocab_size > 0
    if cfg.get("model") is None:  # a tokenizer stage: nothing more to build
        return
    run = train_py.build_run(cfg, corpus, tokenizer)
    assert run.trainer.default_root_dir == str(tmp_path)
    assert getattr(run.module, "tokenizer", None) is tokenizer


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
        "data.max_documents=60",
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
    tags_wanted = ("train/loss", "val/loss", "val/mean_cosine", "train/words_per_sec", "test/loss")
    for tag in (*tags_wanted, "lr-HandWrittenUpdate"):
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


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.window=0", "data.window"),
        ("data.min_count=100000", "data.min_count"),
        ("model.embed_dim=-3", "model.embed_dim"),
        ("data.path=/no/such/file.txt", "data.path"),
        ("data.num_workers=2", "data.num_workers"),
        # torch.optim's own checks, tried before anything is built, under the key they speak of
        ("optimizer=adamw optimizer.lr=-1", "optimizer.lr: Invalid learning rate: -1"),
        ("optimizer=adamw optimizer.betas=[2,0]", "optimizer.betas: Invalid beta parameter at index 0"),
        ("optimizer=adamw optimizer.eps=-1", "optimizer.eps: Invalid epsilon value"),
        ("optimizer=adamw optimizer.weight_decay=-1", "optimizer.weight_decay: Invalid weight_decay value"),
        (
            "optimizer.lr=-1",
            "optimizer.lr: must be > 0",
        ),  # word2vec's SGD (optimizer=word2vec) checks its own
        ("scheduler.min_lr_ratio=2", "scheduler.min_lr_ratio"),
        # a word where a number belongs, caught from the target's signature before it is built
        ("model.embed_dim=abc", "model.embed_dim: 'abc' is not an integer"),
        ("optimizer.lr=fast", "optimizer.lr: 'fast' is not a number"),
        ("trainer.max_steps=abc", "trainer.max_steps: 'abc' is not an integer"),
        ("data.batch_size=x", "data.batch_size: 'x' is not an integer"),
        # the top-level keys train.py reads itself (train.SETTINGS)
        ("train=flase", "train: 'flase' is not true or false (train=true fits"),
        ("test=maybe", "test: 'maybe' is not true or false"),
        ("seed=abc", "seed: 'abc' is not an integer (use an integer in 0..4294967295"),
        ("seed=-1", "seed: -1 < 0"),
        ("torch_threads=abc", "torch_threads: 'abc' is not an integer"),
        ("torch_threads=0", "torch_threads: 0 < 1 (use 1 or more threads, or null"),
        ("progress_every_n_steps=0", "progress_every_n_steps: 0 < 1"),
        ("optimized_direction=up", "optimized_direction: unknown value 'up' (use one of minimize, maximize)"),
        # a value Lightning itself refuses, in its own words, under the node's name
        ("trainer.devices=two", "trainer.devices: `devices`"),
        ("trainer.max_time=garbage", "trainer.max_time: `Timer(duration='garbage')` is not a valid duration"),
    ],
)
def test_bad_config_is_one_clear_line(override: str, key: str, tmp_path: Path):
    # experiment=cbow trains by word2vec's SGD; optimizer=adamw brings torch's own checks.
    proc = run_train(
        "experiment=cbow", "data.max_documents=20", *override.split(), f"hydra.run.dir={tmp_path}"
    )
    _fails(proc, key, tmp_path)


# The hostile tester's base command: a GPT run of 3 steps on 20 documents.
GPT_3_STEPS = [
    "experiment=gpt",
    "trainer.max_steps=3",
    "data.max_documents=20",
    "trainer.limit_val_batches=2",
]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        # tokens between two windows would never be trained on (gpt.yaml's stride is 64)
        ("data.stride=1000", "data.stride: 1000 > context_length=128 (use 1..context_length"),
        ("data.max_tokens=10", "data.max_tokens: 10 training tokens are fewer than one window"),
        ("data.val_fraction=0.99", "data.val_fraction: all 20 documents went to validation"),
        # library checks, each with its fix
        ("model.net.n_head=0", "model.net.n_head: must be positive, got 0 (use 1 or more)"),
        (
            "model.net.dropout=1.5",
            "model.net.dropout: dropout=1.5 is outside [0, 1) (e.g. 0.1, or 0 for none)",
        ),
        ("data.num_proc=0", "data.num_proc: 0 is not a positive integer (use 1 or more)"),
        # nothing to evaluate: the weights would be random
        ("train=false", "ckpt_path: train=false evaluates a checkpoint, and none is given"),
        # a run that can take no step, or whose settings Lightning divides by
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches: 0 trains nothing (use a positive"),
        (
            "trainer.max_time={minutes:-5}",
            "trainer.max_time: a budget of -300 s leaves no time to train (use",
        ),
        ("trainer.max_time=00:00:00:00", "trainer.max_time: a budget of 0 s"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val: -1 < 0 clips nothing (use a positive"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval: 0 validates never"),
        (
            "trainer.limit_val_batches=0",
            "trainer.limit_val_batches: 0 validates nothing, and optimized_metric",
        ),
        # null where a number belongs (the key gpt.yaml's stride follows included)
        ("data.batch_size=null", "data.batch_size: null is not an integer"),
        ("data.context_length=null", "data.context_length: null is not an integer"),
        ("optimizer.lr=null", "optimizer.lr: null is not a number"),
        ("trainer.max_steps=null", "trainer.max_steps: null is not an integer"),
        ("seed=null", "seed: null is not an integer"),
        (
            "trainer.accumulate_grad_batches=0",
            "trainer.accumulate_grad_batches: 0 takes no optimizer step (use",
        ),
    ],
)
def test_bad_gpt_config_is_one_clear_line(override: str, key: str, tmp_path: Path):
    proc = run_train(*GPT_3_STEPS, override, f"hydra.run.dir={tmp_path}")
    _fails(proc, key, tmp_path)


def test_a_warm_up_longer_than_the_run_is_one_warning(tmp_path: Path):
    proc = run_train(*GPT_3_STEPS, "scheduler.warmup_steps=1000", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in proc.stdout.splitlines() if "scheduler.warmup_steps: 1000" in line]
    assert len(warned) == 1 and "3 optimizer steps" in warned[0], proc.stdout[-2000:]


def test_a_vocab_size_a_loaded_tokenizer_does_not_have_is_one_warning(tmp_path: Path):
    """tokenizer=hf loads a tokenizer as it is: a vocab_size setting that differs is said to be
    unused (it had been dropped without a word); an equal one, or none, says nothing."""
    first = tmp_path / "first"
    assert run_train(*GPT_3_STEPS, f"hydra.run.dir={first}").returncode == 0
    size = json.loads((first / "model_config.json").read_text())["config"]["vocab_size"]
    loaded = [*GPT_3_STEPS, "tokenizer=hf", f"tokenizer.path={first / 'tokenizer.json'}"]
    for vocab_size, said in ((5000, 1), (size, 0)):
        proc = run_train(
            *loaded, f"tokenizer.vocab_size={vocab_size}", f"hydra.run.dir={tmp_path / str(vocab_size)}"
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        warned = [line for line in proc.stdout.splitlines() if "is not used: the tokenizer loaded" in line]
        assert len(warned) == said and all(f"has {size} tokens" in line for line in warned), proc.stdout[
            -2000:
        ]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["experiment=cbow_embedding"], "model.net.embeddings"),
        (["experiment=cbow", "tokenizer=hf"], "tokenizer.path"),
    ],
)
def test_a_value_the_config_asks_for_is_named_when_missing(overrides: list[str], key: str, tmp_path: Path):
    """``???`` left unset: Hydra would pass the string on (or keep the model's default) silently."""
    proc = run_train(*overrides, f"hydra.run.dir={tmp_path}")
    _fails(proc, f"{key}: needs a value (add {key}=...", tmp_path)
    assert set(ASKED) == {
        name for name in EXPERIMENTS if "???" in (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    }


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
    command = ["experiment=gpt", *choice, "debug=fast", "trainer.max_steps=1"]
    proc = run_train(*command, f"hydra.run.dir={tmp_path / 'a'}")
    _fails(proc, f"{named} of the simple tokenizer (it takes strict,", tmp_path / "a")
    fix = re.search(r"\(remove (?:it|them): (.+) on the command line\)$", proc.stderr.strip())
    assert fix is not None, proc.stderr[-500:]
    proc = run_train(*command, *fix.group(1).split(), f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 0 and (tmp_path / "b" / "metrics.json").is_file(), proc.stderr[-2000:]


def test_bad_corpus_files(tmp_path: Path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    proc = run_train("experiment=cbow", f"data.path={latin}", f"hydra.run.dir={tmp_path / 'a'}")
    _fails(proc, "UTF-8", tmp_path / "a")
    short = tmp_path / "short.txt"
    short.write_text("just a few words here\n" * 2)
    proc = run_train(
        "experiment=cbow", f"data.path={short}", "data.min_count=1", f"hydra.run.dir={tmp_path / 'b'}"
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
        cfg.paths.output_dir = str(tmp_path)
        trainer = load_script("train.py").build_trainer(cfg, callbacks=[], loggers=[])
        assert trainer.default_root_dir == str(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_survives_debug_fast(name: str, tmp_path: Path):
    """`debug=fast` is the smoke run the README offers for every stage: 5 steps, 2 val batches."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={name}",
                *ASKED.get(name, []),
                "debug=fast",
                f"paths.output_dir={tmp_path}",
                f"paths.root_dir={tmp_path}",
            ],
        )
    shrink_data(cfg)
    metrics = load_script("train.py").train(cfg)
    assert cfg.optimized_metric in metrics and (tmp_path / "metrics.json").is_file()


def test_logger_none_runs_without_any_logger(tmp_path: Path):
    metrics = run_in_process(
        tmp_path / "run", "cbow", "logger=none", "data.max_documents=30", "trainer.max_epochs=1"
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

    time_limit = load_script("train.py").time_limit
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
