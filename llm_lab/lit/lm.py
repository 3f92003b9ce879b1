"""The next-token objective (Bengio et al. 2003; Radford et al. 2018) as one LightningModule.

Every language model of the lab — the MLP LM, the attention LMs, the GPT — is a plain ``nn.Module``
mapping ids (B, T) to logits; this module adds the loss, the metrics and the optimizer groups.
A net returning (B, T, V) is trained on every position; one returning (B, V) predicts only the
token after its window (the MLP LM of Bengio et al.).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric.utilities.throughput import get_available_flops
from safetensors.torch import save_file
from torch import nn

from llm_lab.errors import ConfigError
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory
from llm_lab.nn.weight_decay import weight_decay_groups
from llm_lab.run_dir import net_record, save_model_config

Batch = tuple[torch.Tensor, torch.Tensor]


class NextTokenLM(LabModule):
    """Cross-entropy of the next token. Logs ``train/loss``, ``train/tokens_per_sec``,
    ``train/grad_norm``, ``val/loss`` and ``val/perplexity`` (= exp of the mean validation loss), and
    ``train/mfu`` on a GPU for nets that count their FLOPs. Writes ``model.safetensors`` at the end."""

    requires_causal = True  # a net that sees later positions would read the answer
    extra_ids = 0  # ids the objective adds to the tokenizer's (the masked objective's [MASK])
    net_takes_tokenizer = False  # the net is built with the tokenizer (to look words up)

    def __init__(
        self,
        net: Callable[..., nn.Module],
        vocab_size: int,
        tokenizer: Any = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "tokenizer", "optimizer", "scheduler"], logger=False)
        self.tokenizer = tokenizer  # what callbacks encode prompts and decode samples with
        with_tokenizer = {"tokenizer": tokenizer} if self.net_takes_tokenizer else {}
        self.net = net(vocab_size=vocab_size + self.extra_ids, **with_tokenizer)
        if self.requires_causal and getattr(self.net, "causal", True) is False:
            raise ConfigError(
                "model.net.causal",
                "a next-token model must not see the tokens it predicts",
                "keep model.net.causal=true (or train it on the masked-token task)",
            )
        # One window of ids: Lightning's model summary runs it to count real FLOPs.
        length = getattr(self.net, "context_length", None)
        length = length or getattr(getattr(self.net, "config", None), "context_length", None)
        if isinstance(length, int):
            self.example_input_array = torch.zeros(1, length, dtype=torch.long)
        self._tick = time.perf_counter()
        self._peak_flops: int | None = None
        self._val_sum = self._val_count = 0.0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the predicted positions, and how many positions that was."""
        x, y = batch
        logits = self.net(x)
        if logits.dim() == 2:  # the net predicts only the token after the window
            y = y[:, -1]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1)), y.numel()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        now = time.perf_counter()
        self.log("train/loss", loss, prog_bar=True)
        tokens_per_sec = batch[0].numel() / max(now - self._tick, 1e-9)
        self.log("train/tokens_per_sec", tokens_per_sec)
        self._tick = now
        flops_per_token = getattr(self.net, "flops_per_token", None)
        if self._peak_flops and flops_per_token is not None:
            # Model FLOPs utilisation: achieved training FLOP/s over the chip's peak (PaLM, app. B).
            self.log("train/mfu", tokens_per_sec * flops_per_token(batch[0].size(1)) / self._peak_flops)
        return loss

    def on_train_epoch_start(self) -> None:
        self._tick = time.perf_counter()

    def on_train_start(self) -> None:
        # Peak FLOP/s of a known accelerator at the training precision (None on a CPU: no MFU).
        dtype = torch.bfloat16 if "bf16" in str(self.trainer.precision) else torch.float32
        self._peak_flops = get_available_flops(self.device, dtype) if self.device.type == "cuda" else None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.trainer.global_step % getattr(self.trainer, "log_every_n_steps", 50) == 0:
            grads = [p.grad.detach().norm() for p in self.parameters() if p.grad is not None]
            if grads:
                self.log("train/grad_norm", torch.stack(grads).norm())

    def on_validation_epoch_start(self) -> None:
        self._val_sum = self._val_count = 0.0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self._val_sum += float(loss) * n
        self._val_count += n
        self.log("val/loss", loss, prog_bar=True, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        # Perplexity is exp of the mean loss over all validation tokens (of every DDP rank), not a
        # mean of per-batch or per-rank perplexities.
        totals = self.trainer.strategy.reduce(
            torch.tensor([self._val_sum, self._val_count], dtype=torch.float64, device=self.device),
            reduce_op="sum",
        )
        if totals[1] > 0:
            self.log("val/perplexity", math.exp(min(float(totals[0] / totals[1]), 50.0)))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self.log("test/loss", loss, batch_size=n)

    def param_groups(self) -> Iterable[Any]:
        """Weight decay on linear-layer weights only (see llm_lab/nn/weight_decay.py)."""
        return weight_decay_groups(self.net)

    def on_fit_end(self) -> None:
        """Export the trained net as ``model.safetensors`` (tensors only: loading it runs no code)."""
        # Every rank takes part: under FSDP gathering the full state dict is a collective operation.
        state = self.trainer.strategy.lightning_module_state_dict()
        if self.trainer.is_global_zero:
            # Tied weights (GPT's head) share storage, which safetensors refuses: store copies.
            tensors = {
                k.removeprefix("net."): v.detach().cpu().clone().contiguous() for k, v in state.items()
            }
            tmp = self.run_dir / "model.safetensors.tmp"
            save_file(tensors, str(tmp))
            tmp.replace(self.run_dir / "model.safetensors")
            save_model_config(self.net, self.run_dir)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The net's settings as plain values, so that the checkpoint alone rebuilds the model
        # (generate.py) without instantiating anything a file names.
        record = net_record(self.net)
        if record is not None:
            checkpoint["net"] = record
