"""Several processes (FSDP2 through Lightning's ``ModelParallelStrategy``): sharding, rank shares, global counts.

How an RL step runs on ``W`` ranks:

- **Rollouts are split by task.** Each rank takes its share of the step's ``B`` tasks (``rank_share``) and runs all
  ``G`` siblings of each of them, so a GRPO group never straddles ranks: advantages, Pillar-1 sibling statistics and
  every other group-level quantity are computed on whole groups, locally.
- **No collective during generation or scoring.** Ranks take different numbers of forward passes (episodes and
  responses end at different times). The first no-grad forward of a rollout/scoring phase gathers the full
  parameters once (``gather_for_inference``, the same collectives on every rank, in module order); later no-grad
  forwards of the phase run locally. The first training forward frees them again (``shard_for_training``).
- **One token mean over all ranks.** Each mini-batch's token count is summed over ranks (``globalise_token_counts``),
  every rank divides its partial sum by that global count, and FSDP sums (not averages) the gradients, so two
  processes with half the batch each give the loss and gradients of one process with the whole batch.
- **Step metrics are summed over ranks** (``sum_across_ranks``): they are token means over the global count, so
  their sum is the global value; the pillars' controllers see the same numbers on every rank.
- **Rank 0 first** (``rank_zero_first``): rank 0 builds the tokenizer, downloads the model, runs (and caches) the
  warm start; the other ranks wait at a barrier, then load from the cache.

4-bit bases are kept whole on every rank: FSDP2 turns parameters into ``DTensor`` shards and drops bitsandbytes'
``Params4bit.quant_state`` on the way (bitsandbytes #1945, accelerate #3983). With ``policy.quantization: nf4`` the
frozen weights are left out of sharding (``ignored_params``) and only the LoRA adapters are sharded; the 4-bit base
is small enough to replicate (a 7B base is ~4 GiB).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
_SHARDED = "_craft_fsdp_modules"
_GATHERED = "_craft_fsdp_gathered"


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_share(items: Sequence[T]) -> list[T]:
    """This rank's contiguous share of ``items`` (tasks): shares differ in size by at most one, rank order."""
    rank, size = world()
    if size == 1:
        return list(items)
    if len(items) < size:
        raise ValueError(
            f"data.tasks_per_step={len(items)} is smaller than the {size} processes; every process needs at least "
            f"one task (a group of G siblings): set data.tasks_per_step >= {size}"
        )
    bounds = [len(items) * r // size for r in range(size + 1)]
    return list(items[bounds[rank] : bounds[rank + 1]])


def globalise_token_counts(mini_batches: list) -> None:
    """Replace each mini-batch's ``num_tokens`` by its sum over ranks (one all-reduce for all of them)."""
    _, size = world()
    if size == 1 or not mini_batches:
        return
    counts = torch.tensor([m.num_tokens for m in mini_batches], dtype=torch.long)
    dist.all_reduce(counts)
    for mini, count in zip(mini_batches, counts.tolist()):
        mini.num_tokens = count


def sum_across_ranks(loss: torch.Tensor, metrics: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Loss and step metrics summed over ranks (one all-reduce); unchanged with a single process."""
    _, size = world()
    if size == 1:
        return loss, metrics
    keys = sorted(metrics)
    values = torch.stack([loss.detach().float().cpu()] + [torch.as_tensor(metrics[k]).detach().float().cpu()
                                                          for k in keys])
    dist.all_reduce(values)
    return values[0], {key: values[i + 1] for i, key in enumerate(keys)}


@contextlib.contextmanager
def rank_zero_first(strategy) -> Iterator[None]:
    """Rank 0 runs the block first while the others wait at a barrier; then the others run it."""
    rank, size = world()
    if size > 1 and rank != 0:
        strategy.barrier("craft_pl.rank_zero_first")
    try:
        yield
    finally:
        if size > 1 and rank == 0:
            strategy.barrier("craft_pl.rank_zero_first")


# ---------------------------------------------------------------------------------------------------- FSDP2
def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder blocks of a Hugging Face causal LM (class names from its ``_no_split_modules``)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"found no transformer blocks to shard in {type(model).__name__} (no _no_split_modules)")
    return blocks


def using_fsdp2(trainer) -> bool:
    from lightning.pytorch.strategies import ModelParallelStrategy

    return trainer is not None and isinstance(trainer.strategy, ModelParallelStrategy)


def shard_policy(module) -> None:
    """Apply ``fully_shard`` to each transformer block, then to the whole model (and the full-finetune reference),
    on the data-parallel mesh, when the trainer runs ``ModelParallelStrategy``; otherwise do nothing."""
    trainer = module._trainer
    if not using_fsdp2(trainer):
        return
    mesh = trainer.strategy.device_mesh
    if mesh["tensor_parallel"].size() != 1:
        raise ValueError(
            f"craft_pl shards data-parallel only: ModelParallelStrategy has tensor_parallel_size "
            f"{mesh['tensor_parallel'].size()}; set tensor_parallel_size: 1 and data_parallel_size: world size "
            "(devices x num_nodes), as configs/strategy/fsdp2_*.yaml do"
        )
    policy = module.policy
    for model in (policy.model, policy.reference):
        if model is not None:
            shard_model(model, mesh["data_parallel"], keep_frozen_whole=policy.quantization is not None)


def shard_model(model: torch.nn.Module, mesh, keep_frozen_whole: bool = False) -> None:
    """``fully_shard`` each transformer block of ``model`` and then ``model`` itself on the 1-D ``mesh``.

    One unit per block keeps a block's frozen weights and its LoRA adapters together, so a forward never holds more
    than one whole block (FSDP2 shards parameter by parameter; a unit mixing frozen and trainable tensors is fine).
    ``keep_frozen_whole`` leaves frozen parameters out of sharding (4-bit bases). Gradients are summed over ranks.
    """
    from torch.distributed.fsdp import fully_shard

    if getattr(model, _SHARDED, None):
        return
    ignored = {p for p in model.parameters() if not p.requires_grad} if keep_frozen_whole else None
    units = [fully_shard(block, mesh=mesh, ignored_params=ignored) for block in transformer_blocks(model)]
    units.append(fully_shard(model, mesh=mesh, ignored_params=ignored))
    for unit in units:
        unit.set_gradient_divide_factor(1.0)  # losses are already divided by the global token count
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    setattr(model, _SHARDED, units)
    setattr(model, _GATHERED, False)


def gather_for_inference(model: torch.nn.Module) -> None:
    """Unshard every FSDP unit of ``model`` and keep it whole until ``shard_for_training`` (no-op if not sharded or
    already gathered). Collective: every rank reaches it at the same point (its first no-grad forward of a phase)."""
    units = getattr(model, _SHARDED, None)
    if not units or getattr(model, _GATHERED):
        return
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    setattr(model, _GATHERED, True)


def shard_for_training(model: torch.nn.Module) -> None:
    """Free the gathered parameters (local, no communication) and restore per-forward resharding."""
    units = getattr(model, _SHARDED, None)
    if not units or not getattr(model, _GATHERED):
        return
    for unit in reversed(units):
        unit.reshard()
        unit.set_reshard_after_forward(True, recurse=False)
    setattr(model, _GATHERED, False)


FSDP_ON_CPU = (
    "Lightning's FSDPStrategy (FSDP1) runs on GPUs only. For several processes on CPU use FSDP2 through "
    "ModelParallelStrategy: add `--config configs/strategy/fsdp2_cpu.yaml` (configs/strategy/fsdp2_gpu.yaml on GPUs)"
)


def explain_strategy_error(error: Exception) -> str:
    """Our message for Lightning's refusal of ``strategy: fsdp`` on CPU; other errors unchanged."""
    text = str(error)
    if "fsdp" in text.lower() and "requires a GPU" in text:
        return f"{FSDP_ON_CPU} (Lightning said: {text})"
    return text
