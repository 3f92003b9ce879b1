"""The next-token objective (Bengio et al. 2003; Radford et al. 2018) as one LightningModule.

Every language model of the lab — the MLP LM, the attention LMs, the GPT — is a plain ``nn.Module``
mapping ids (B, T) to logits; this module adds the loss, the metrics and the optimizer groups.
A net returning (B, T, V) is trained on every position; one returning (B, V) predicts only the
token after its window (the MLP LM of Bengio et al.).

Nothing here waits for the device on an ordinary training step: metrics stay tensors until the
loggers read them (every ``trainer.log_every_n_steps``), and the gradient norm is computed only for
those steps. Speed (tokens/s, MFU) is measured by ``llm_lab.callbacks.throughput`` from
:meth:`NextTokenLM.batch_tokens` and :meth:`NextTokenLM.batch_flops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.distributed.tensor import DTensor

from llm_lab.atomic import replacing
from llm_lab.errors import ArgumentError
from llm_lab.lit.base import LabModule, OptimizerFactory, SchedulerFactory, is_logging_step
from llm_lab.nn.weight_decay import weight_decay_groups
from llm_lab.run_dir import net_record, save_model_config

Batch = tuple[torch.Tensor, torch.Tensor]


class NextTokenLM(LabModule):
    """Cross-entropy of the next token. Logs ``train/loss``, ``train/grad_norm`` (before clipping),
    ``val/loss`` and ``val/perplexity`` (= exp of the mean validation loss). Writes
    ``model.safetensors`` at the end."""

    LOGGED: tuple[str, ...] = ("train/loss", "train/grad_norm", "val/loss", "val/perplexity", "test/loss")

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
        pretrained: nn.Module | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler)
        ignore = ["net", "tokenizer", "optimizer", "scheduler", "pretrained"]
        self.save_hyperparameters(ignore=ignore, logger=False)
        self.tokenizer = tokenizer  # what callbacks encode prompts and decode samples with
        with_tokenizer = {"tokenizer": tokenizer} if self.net_takes_tokenizer else {}
        # init_from's model, trained further (its own settings: model.net's are not read), or a new one.
        self.net = (
            pretrained
            if pretrained is not None
            else net(vocab_size=vocab_size + self.extra_ids, **with_tokenizer)
        )
        if self.requires_causal and getattr(self.net, "causal", True) is False:
            raise ArgumentError(
                "causal",
                "a next-token model must not see the tokens it predicts",
                "keep causal=true (or train it on the masked-token task)",
            )
        # One window of ids: Lightning's model summary runs it to count real FLOPs.
        length = getattr(self.net, "context_length", None)
        length = length or getattr(getattr(self.net, "config", None), "context_length", None)
        if isinstance(length, int):
            self.example_input_array = torch.zeros(1, length, dtype=torch.long)
        # The net's settings as plain values, recorded before FSDP (trainer=fsdp) changes its class.
        self.net_settings = net_record(self.net)
        self._flops_per_token: dict[int, float | None] = {}
        self._val_sum = torch.zeros(())
        self._val_count = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the predicted positions, and how many positions that was.

        The softmax runs in float32. Under autocast (``trainer.precision=bf16-mixed``) the
        cross-entropy is one of the ops autocast computes in float32 itself: on a GPU its log-softmax
        reads the bf16 logits and writes float32, so an explicit ``.float()`` would only add a
        full-size float32 copy of the logits (B·T·V floats). Without autocast, half-precision
        logits (``bf16-true``) are cast here."""
        x, y = batch
        logits = self.net(x)
        if logits.dim() == 2:  # the net predicts only the token after the window
            y = y[:, -1]
        if logits.dtype != torch.float32 and not torch.is_autocast_enabled(logits.device.type):
            logits = logits.float()
        return F.cross_entropy(logits.flatten(0, -2), y.flatten()), y.numel()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch)
        # Only where the loggers write (they drop the other steps' values): each self.log is Python
        # bookkeeping in Lightning, the largest per-step cost a profile of this loop shows. Not
        # prog_bar=True: Lightning converts progress-bar values to numbers after every batch, which
        # waits for the device; the progress display reads the loss when it prints.
        if is_logging_step(self.trainer, self.trainer.global_step + 1):
            self.log("train/loss", loss)
        return loss

    def batch_tokens(self, batch: Batch) -> int:
        """Tokens fed to the net in ``batch`` (for ``train/tokens_per_sec``)."""
        return batch[0].numel()

    def batch_flops(self, batch: Batch) -> float | None:
        """Training FLOPs (forward + backward) of ``batch``, from the net's ``flops_per_token``
        (PaLM's count, see :meth:`llm_lab.models.gpt.GPT.flops_per_token`); None for a net that does
        not count them."""
        length = batch[0].size(-1)
        if length not in self._flops_per_token:  # shapes repeat: count once per window length
            count = getattr(self.net, "flops_per_token", None)
            self._flops_per_token[length] = None if count is None else float(count(length))
        per_token = self._flops_per_token[length]
        return None if per_token is None else per_token * batch[0].numel()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Only on the steps whose metrics reach the loggers (this step is global_step + 1).
        if not is_logging_step(self.trainer, self.trainer.global_step + 1):
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)  # foreach norms: not one kernel per tensor
            if isinstance(norm, DTensor):  # FSDP: a sum over the shards of every process
                norm = norm.full_tensor()
            self.log("train/grad_norm", norm)

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_count = 0

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self._val_sum += loss.detach().double() * n  # on the device: no wait per batch
        self._val_count += n

    def on_validation_epoch_end(self) -> None:
        # The mean loss over all validation tokens of every DDP rank (each window is on one rank,
        # see EveryItemOnce), and perplexity its exp: not a mean of per-batch or per-rank values,
        # and the same number on every rank, so checkpoints and sweeps agree whichever rank reads it.
        count = torch.tensor(float(self._val_count), dtype=torch.float64, device=self.device)
        totals = self.trainer.strategy.reduce(torch.stack([self._val_sum, count]), reduce_op="sum")
        if totals[1] > 0:
            mean = float(totals[0] / totals[1])
            self.log("val/loss", mean)
            self.log("val/perplexity", math.exp(min(mean, 50.0)))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, n = self.loss(batch)
        self.log("test/loss", loss, batch_size=n)

    def param_groups(self) -> Iterable[Any]:
        """Weight decay on linear-layer weights only (see llm_lab/nn/weight_decay.py)."""
        return weight_decay_groups(self.net)

    def sharding_root(self) -> nn.Module:
        """``trainer=fsdp`` shards the net: its ``forward`` (training, and the generation of text
        samples) gathers the parameters outside the sharded blocks."""
        return self.net

    def setup(self, stage: str) -> None:
        # model_config.json beside the model.safetensors written at the end, from the net as built
        # (before FSDP changes its class).
        if stage == "fit" and self.trainer.is_global_zero:
            save_model_config(self.net, self.run_dir)

    def on_fit_end(self) -> None:
        """Export the trained net as ``model.safetensors`` (tensors only: loading it runs no code)."""
        # Every rank takes part: under FSDP gathering the full state dict is a collective operation.
        state = self.trainer.strategy.lightning_module_state_dict()
        if self.trainer.is_global_zero:
            # Tied weights (GPT's head) share storage, which safetensors refuses: store copies.
            tensors = {  # the net alone (DPO's frozen reference is not the model it trained)
                k.removeprefix("net."): v.detach().cpu().clone().contiguous()
                for k, v in state.items()
                if k.startswith("net.")
            }
            with replacing(self.run_dir / "model.safetensors") as tmp:
                save_file(tensors, str(tmp))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The net's settings as plain values, so that the checkpoint alone rebuilds the model
        # (generate.py) without instantiating anything a file names.
        if self.net_settings is not None:
            checkpoint["net"] = self.net_settings
