"""Training speed in tokens per second and model FLOPs utilisation (MFU), measured right on a GPU.

A GPU runs what the CPU queues, later: the time between two ``training_step`` calls is how fast the
CPU *queues* steps, not how fast the GPU finishes them, so a clock must wait for the device before it
is read. Lightning's ``ThroughputMonitor`` waits (``torch.cuda.synchronize``) after every batch,
which also makes the GPU idle while the CPU prepares each next step. This callback waits only on the
steps whose metrics reach the loggers (every ``trainer.log_every_n_steps``), where Lightning waits
anyway to read the values, and gives Lightning's ``Throughput`` the running totals there: the rates
are exact averages over the last ``window_size - 1`` logging intervals, whatever happened between.
Validation is left out of the training time, as ``ThroughputMonitor`` does.

MFU is the model's FLOP/s over the device's peak (Chowdhery et al. 2022, PaLM, appendix B): the
LightningModule counts the FLOPs of a batch (a GPT: 6N + 12·L·H·Q·T per token). The peak is
``peak_tflops`` when given, else the dense tensor-core peak of the chip at the training precision
(:func:`peak_flops`); the run's log states it once. Without a peak (a CPU) there is no ``train/mfu``.

The LightningModule tells what a batch holds: ``batch_tokens(batch) -> int`` and
``batch_flops(batch) -> float | None``; for a module without ``batch_tokens`` the callback does nothing.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch.utilities.data import extract_batch_size

from llm_lab.console import LOG_FILE_ONLY_RECORD
from llm_lab.errors import ArgumentError
from llm_lab.lit.base import is_logging_step

log = logging.getLogger("train")

# Dense (no 2:4 sparsity) bf16/fp16 tensor-core peaks in TFLOP/s of chips that Lightning's table
# (lightning.fabric.utilities.throughput) misses by name ("NVIDIA H200") or lists at the sparse rate:
# NVIDIA's Hopper datasheets quote "with sparsity" figures, twice the dense ones. First match wins.
DENSE_HALF_TFLOPS = {"h200 nvl": 835.5, "h200": 989.4, "h100 nvl": 835.5}

PRECISION_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matrix products run in at a Trainer ``precision`` (``bf16-mixed`` → bfloat16)."""
    return PRECISION_DTYPES.get(precision.split("-")[0], torch.float32)


def peak_flops(
    device: torch.device, dtype: torch.dtype, tflops: float | None = None
) -> tuple[float | None, str]:
    """The peak FLOP/s MFU is measured against, and where it comes from: ``tflops`` if given, else
    :data:`DENSE_HALF_TFLOPS` for bf16/fp16 on the chips listed there, else Lightning's table
    (``get_available_flops``); ``(None, reason)`` when unknown."""
    if tflops is not None:
        return tflops * 1e12, "as given"
    if device.type != "cuda":
        return None, f"no peak is known for a {device.type.upper()}"
    name = torch.cuda.get_device_name(device)
    if dtype in (torch.bfloat16, torch.float16):
        chip = next((c for c in DENSE_HALF_TFLOPS if c in name.lower()), None)
        if chip is not None:
            return DENSE_HALF_TFLOPS[chip] * 1e12, f"dense {dtype} peak of {name}, datasheet"
    with warnings.catch_warnings():  # "FLOPs not found": said below, with the way out
        warnings.simplefilter("ignore")
        peak = get_available_flops(device, dtype)
    if peak is None:
        return None, f"no {dtype} peak is known for {name!r}"
    return float(peak), f"{dtype} peak of {name}, Lightning's table"


class TokenThroughput(L.Callback):
    """Log ``train/tokens_per_sec`` (all processes together) and ``train/mfu`` (per device) on the
    steps the loggers write, averaged over the last ``window_size - 1`` of those intervals."""

    LOGGED = ("train/tokens_per_sec", "train/mfu")

    clock = staticmethod(time.perf_counter)  # seconds; a test may give it another clock

    def __init__(self, window_size: int = 5, peak_tflops: float | None = None) -> None:
        if window_size < 2:
            raise ArgumentError(
                "window_size", f"{window_size} < 2: a rate needs two measurements", "use 2 or more"
            )
        if peak_tflops is not None and peak_tflops <= 0:
            raise ArgumentError(
                "peak_tflops", f"{peak_tflops} is not positive", "give the chip's peak, or null"
            )
        self.window_size = window_size
        self.peak_tflops = peak_tflops
        self._throughput: Throughput | None = None  # None: the module does not count tokens
        self._peak: float | None = None
        self._peak_source = ""
        self._reset()

    def _reset(self) -> None:
        self._start = self._paused = 0.0
        self._pause_start: float | None = None
        self._batches = self._samples = self._tokens = 0
        self._flops: float | None = 0.0  # since the last measurement; None: not counted
        self._last_step = 0
        self._peak_stated = False

    def _wait(self, trainer: L.Trainer) -> None:
        """Let the device finish what was queued, so that the clock reads finished work."""
        device = trainer.strategy.root_device
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        if not hasattr(pl_module, "batch_tokens"):
            self._throughput = None
            return
        self._peak, self._peak_source = peak_flops(
            trainer.strategy.root_device, compute_dtype(str(trainer.precision)), self.peak_tflops
        )
        self._throughput = Throughput(
            available_flops=self._peak, world_size=trainer.world_size, window_size=self.window_size
        )
        self._wait(trainer)
        self._start = self.clock()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._throughput is None:
            return
        # Every batch: integer arithmetic on shapes only, nothing that waits for the device.
        self._batches += 1
        self._samples += extract_batch_size(batch)
        self._tokens += pl_module.batch_tokens(batch)
        flops = pl_module.batch_flops(batch)
        self._flops = None if flops is None or self._flops is None else self._flops + flops
        step = trainer.global_step
        # With gradient accumulation several batches end at one step: the first completes it.
        if step == self._last_step or not is_logging_step(trainer, step):
            return
        self._last_step = step
        self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        assert self._throughput is not None
        self._wait(trainer)
        counted = self._flops is not None
        self._throughput.update(
            time=self.clock() - self._start - self._paused,
            batches=self._batches,
            samples=self._samples,
            lengths=self._tokens,
            flops=None if self._flops is None else int(self._flops),
        )
        self._flops = 0.0
        metrics = self._throughput.compute()
        tokens_per_sec = metrics.get("items_per_sec", metrics.get("device/items_per_sec"))
        if tokens_per_sec is not None:
            pl_module.log("train/tokens_per_sec", float(tokens_per_sec))
        if "device/mfu" in metrics:
            pl_module.log("train/mfu", float(metrics["device/mfu"]))
        if counted and not self._peak_stated and trainer.is_global_zero:
            self._peak_stated = True
            if self._peak is None:
                # On a CPU there is nothing to set: said in train.log only. A GPU of unknown peak
                # is the user's to name, on the console.
                on_cpu = trainer.strategy.root_device.type == "cpu"
                log.info(
                    f"train/mfu is not logged: {self._peak_source} (set callbacks.throughput.peak_tflops)",
                    extra=LOG_FILE_ONLY_RECORD if on_cpu else None,
                )
            else:
                log.info(
                    f"train/mfu: model FLOP/s over {self._peak / 1e12:.1f} TFLOP/s ({self._peak_source})"
                )

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._throughput is not None and not trainer.sanity_checking and trainer.state.fn == "fit":
            self._wait(trainer)
            self._pause_start = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pause_start is not None:
            self._wait(trainer)
            self._paused += self.clock() - self._pause_start
            self._pause_start = None
