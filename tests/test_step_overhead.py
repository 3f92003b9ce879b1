"""The training step as a GPU sees it, checked on the CPU: no step but the logging ones reads a value
back from the device (each read makes the CPU wait for the GPU), the logged speed is timed from
finished work over a window, MFU uses the peak it names, and the loss runs in float32."""

from __future__ import annotations

import csv
import functools
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, TINY_GPT, run_in_process
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, TensorDataset

from llm_lab.callbacks.throughput import TokenThroughput, peak_flops
from llm_lab.config import build
from llm_lab.errors import ConfigError
from llm_lab.lit.lm import NextTokenLM
from llm_lab.models import GPT


class DeviceReads(L.Callback, TorchDispatchMode):
    """Records, by training step, every read of a tensor's value into Python (``item()``, ``float()``,
    ``bool()``: ``aten._local_scalar_dense``), with the line of the lab or Lightning that asked."""

    found: ClassVar[dict[int, list[str]]] = defaultdict(list)

    def __init__(self) -> None:
        L.Callback.__init__(self)
        TorchDispatchMode.__init__(self)
        self.step: int | None = None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default and self.step is not None:
            caller = [f for f in traceback.extract_stack() if "site-packages/torch/" not in f.filename][-2]
            self.found[self.step].append(f"{Path(caller.filename).name}:{caller.lineno} {caller.line}")
        return func(*args, **(kwargs or {}))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.__enter__()

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.step = trainer.global_step + 1  # until the next batch: its hooks and Lightning's logging

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.step = None
        self.__exit__(None, None, None)


def test_only_the_logging_steps_read_values_from_the_device(tmp_path: Path):
    """train.py's GPT stage with every default callback, TensorBoard (text samples at step 8) and a
    checkpoint at the end. torch's foreach AdamW reads its step counters, which stay on the CPU even
    when training on a GPU; the fused one (the fast choice on a GPU) keeps them on the device, so
    with it every read left is one that would make the CPU wait for a GPU."""
    DeviceReads.found.clear()
    run_in_process(
        tmp_path / "run",
        "gpt",
        *TINY_GPT[1:],
        "logger=tensorboard",
        "+optimizer.fused=true",
        "trainer.max_steps=12",
        "trainer.log_every_n_steps=4",
        "progress_every_n_steps=4",
        "callbacks.text_samples.every_n_steps=8",
        f"+callbacks.device_reads._target_={__name__}.DeviceReads",
    )
    steps = set(DeviceReads.found)
    assert {4, 8} <= steps, DeviceReads.found  # Lightning reads the logged values: the probe sees it
    # Step 1: the first progress line. Everything else waits for the loggers' steps.
    ordinary = {s: DeviceReads.found[s] for s in steps - {1, 4, 8, 12}}
    assert not ordinary, ordinary


class FakeTime(L.Callback):
    """A clock for TokenThroughput: 0.5 s per training batch, 100 s per validation batch."""

    def __init__(self) -> None:
        self.now = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self.now += 0.5

    def on_validation_batch_start(self, *args: Any) -> None:
        self.now += 100.0


def tiny_lm() -> NextTokenLM:
    torch.manual_seed(0)
    net = functools.partial(GPT.from_size, "lab-tiny", context_length=16)
    return NextTokenLM(net, vocab_size=50, optimizer=functools.partial(torch.optim.SGD, lr=0.1))


def test_logged_speed_and_mfu_are_timed_over_training_only(tmp_path: Path):
    batch, length, peak_tflops = 4, 16, 2.0
    ids = torch.randint(0, 50, (64, length + 1), generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(ids[:, :-1], ids[:, 1:]), batch_size=batch)
    fake = FakeTime()
    throughput = TokenThroughput(window_size=3, peak_tflops=peak_tflops)
    throughput.clock = lambda: fake.now  # type: ignore[method-assign]
    trainer = L.Trainer(
        max_steps=12,
        log_every_n_steps=2,
        val_check_interval=5,
        limit_val_batches=2,
        logger=CSVLogger(tmp_path),
        default_root_dir=tmp_path,  # where the module writes model.safetensors
        callbacks=[fake, throughput],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = tiny_lm()
    trainer.fit(module, data, data)
    with open(Path(trainer.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/tokens_per_sec")]
    # The window (3 measurements, 2 logging intervals of 2 steps) is full from step 6 on; steps 6 and
    # 12 include a validation (after step 5 and step 10: 200 s of fake time that must not count).
    assert [int(r["step"]) for r in rows] == [5, 7, 9, 11]  # Lightning's 0-based step of steps 6..12
    tokens_per_sec = batch * length / 0.5
    config = module.net.config
    n_params = sum(p.numel() for p in module.net.parameters()) - module.net.pos_emb.weight.numel()
    flops_per_token = 6 * n_params + 12 * config.n_layer * config.n_embd * length  # PaLM, appendix B
    for row in rows:
        assert float(row["train/tokens_per_sec"]) == pytest.approx(tokens_per_sec, rel=1e-6)
        mfu = tokens_per_sec * flops_per_token / (peak_tflops * 1e12)
        assert float(row["train/mfu"]) == pytest.approx(mfu, rel=1e-6)


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H200", 989.4),  # missing from Lightning's table (it knows "h200 sxm1" names only)
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA H100 80GB HBM3", 989.4),  # Lightning's "h100 sxm" entry
        ("NVIDIA A100-SXM4-80GB", 312.0),  # Lightning's table
        ("Mystery GPU", None),
    ],
)
def test_the_bf16_peak_of_a_gpu_comes_from_its_datasheet(name: str, tflops: float | None, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak, source = peak_flops(torch.device("cuda", 0), torch.bfloat16)
    assert peak == (None if tflops is None else pytest.approx(tflops * 1e12)), source
    assert peak_flops(torch.device("cuda", 0), torch.bfloat16, tflops=100.0)[0] == 100e12  # the user's
    assert peak_flops(torch.device("cpu"), torch.bfloat16)[0] is None


def test_the_loss_is_a_float32_softmax_of_the_logits_in_every_precision():
    module = tiny_lm()
    x, y = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))

    def reference() -> torch.Tensor:  # the logits as the net returns them, upcast explicitly
        return F.cross_entropy(module.net(x).float().flatten(0, 1), y.flatten())

    expected = reference()
    loss, n = module.loss((x, y))
    assert loss.dtype == torch.float32 and n == 32
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # trainer.precision=bf16-mixed
        loss, expected = module.loss((x, y))[0], reference()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), abs=1e-6)
    module.net.to(torch.bfloat16)  # trainer.precision=bf16-true: bf16 logits, no autocast
    loss, expected = module.loss((x, y))[0], reference()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize(("key", "value"), [("window_size", 1), ("peak_tflops", 0)])
def test_a_bad_throughput_setting_names_its_key(key: str, value: float):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"callbacks.throughput.{key}={value}"])
    with pytest.raises(ConfigError, match=f"^callbacks.throughput.{key}: "):
        build(cfg.callbacks.throughput, cfg)
