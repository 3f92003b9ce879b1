"""Fully Sharded Data Parallel training (``trainer=fsdp``) with torch's FSDP2, through Lightning.

FSDP (Zhao et al. 2023, "PyTorch FSDP"; the ZeRO-3 idea of Rajbhandari et al. 2020) keeps on each
process only a shard of every parameter, gradient and optimizer state, and gathers a layer's full
weights just before it runs. torch's current implementation, ``fully_shard`` (FSDP2), shards each
parameter as a ``DTensor``, so ordinary code keeps working on sharded models: Lightning's gradient
clipping (``torch.nn.utils.clip_grad_norm_`` computes the global norm across the shards),
checkpoints gathered into one file, and the CPU with the gloo backend (what the tests run).

Lightning runs FSDP2 through its ``ModelParallelStrategy``, which leaves the sharding to the
LightningModule's ``configure_model`` hook (``LabModule.configure_model`` calls :meth:`shard`).
Checkpoints are one full state dict, written by rank 0 through the run's checkpoint plugin (atomic
writes) and read back into the shards by every process (:meth:`FSDP2Strategy.load_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel, OptimStateKeyType, fully_shard


class FSDP2Strategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` as plain FSDP: every process is one data-parallel shard (no tensor
    parallelism), each module of a class in ``shard`` (the Transformer blocks) is its own FSDP unit
    gathered only while it runs, and checkpoints hold the full, unsharded state (loadable anywhere,
    ``generate.py`` included)."""

    def __init__(self, shard: Iterable[type[nn.Module]] = (), **kwargs: Any) -> None:
        super().__init__(tensor_parallel_size=1, save_distributed_checkpoint=False, **kwargs)
        self.shard_classes = tuple(shard)

    def setup_environment(self) -> None:
        # ModelParallelStrategy's default ("auto") is one data-parallel rank per machine, with the
        # machine's GPUs for tensor parallelism; FSDP alone makes every process a data-parallel rank.
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def shard(self, root: nn.Module) -> None:
        """Make each module of ``root`` of a ``shard`` class an FSDP unit, then ``root`` itself (the
        module whose ``forward`` runs: it gathers the parameters outside those units, such as
        embeddings and the output head). Idempotent: Lightning calls ``configure_model`` again for
        a validation or test after fitting."""
        if isinstance(root, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]
        for module in [m for m in root.modules() if isinstance(m, self.shard_classes)]:
            fully_shard(module, mesh=mesh)
        fully_shard(root, mesh=mesh)

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read a full checkpoint (through the checkpoint plugin: ``weights_only``) on every process
        and copy each process's shard of the weights and optimizer states out of it.

        Lightning's own loader goes submodule by submodule, which fails on the parameters of plain
        submodules of an FSDP unit (the GPT's embeddings); torch's ``set_model_state_dict`` on the
        whole model handles them, once every unit holds only its shard again. The optimizer states
        were saved keyed by parameter index (Lightning's layout, loadable without FSDP); FSDP reads
        them by name.
        """
        assert self.model is not None and self.lightning_module is not None
        checkpoint = self.checkpoint_io.load_checkpoint(Path(self.broadcast(checkpoint_path)))
        options = StateDictOptions(
            full_state_dict=True, broadcast_from_rank0=True, strict=self.lightning_module.strict_loading
        )
        for module in self.model.modules():  # a forward (the model summary's) leaves the root gathered
            if isinstance(module, FSDPModule):
                module.reshard()
        set_model_state_dict(self.model, checkpoint.pop("state_dict"), options=options)
        for optimizer, state in zip(self.optimizers, checkpoint.pop("optimizer_states", []), strict=False):
            by_name = FullyShardedDataParallel.rekey_optim_state_dict(
                state, OptimStateKeyType.PARAM_NAME, self.model
            )
            set_optimizer_state_dict(self.model, optimizer, by_name, options=options)
        return checkpoint
