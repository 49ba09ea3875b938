"""Multi-process Stage-1 training with HF ``accelerate`` (DDP tested on CPU; FSDP/DeepSpeed untested).

``omnishift train CONFIG`` runs unchanged under ``accelerate launch``; on one process it is the
plain loop. What a config means must not depend on how many processes run it, so the batch is
defined globally:

* one optimizer step = ``loop.grad_accum`` micro-batches of ``loop.batch_size`` items, whatever
  the world size W. Each micro-batch is cut into W contiguous shards (:func:`shard`) and process
  r trains on shard r, so W processes follow the single-process trajectory (up to float
  summation order) and more processes only make a step faster. ``batch_size`` should be a
  multiple of W for balanced work; a process whose shard is empty (a ragged last batch) runs a
  zero-weight forward so that every process joins every gradient all-reduce.
* the loss of a step is the mean over the response tokens of the whole step on *all* processes:
  the token count is all-reduced before the first forward (``num_items_in_batch``), and each
  process scales its loss by W because DDP averages gradients over processes. The gradient is
  then exactly the single-process one.
* the data order is the same permutation on every rank (seeded per epoch), so shards never
  overlap; only the main process writes logs, checkpoints and ``final/``.

FSDP and DeepSpeed go through the same calls (``accelerator.prepare``/``backward``/
``clip_grad_norm_``); their checkpoints use ``accelerator.save_state`` because sharded
parameters cannot be read off the module. They need GPUs and are not exercised by the tests.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch


def process_state(device: str):
    """accelerate's per-process state (rank, world size), made before the model is placed.

    Args:
        device: ``loop.device``: ``auto`` (what accelerate picks: CUDA if present), ``cpu``, ``cuda``.
    """
    from accelerate import PartialState

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"loop.device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("loop.device=cuda but no CUDA device is visible; use loop.device=auto or cpu")
    return PartialState(cpu=device == "cpu")


def make_accelerator(device: str, needs_unused_check: bool):
    """The run's :class:`accelerate.Accelerator` (reads the ``accelerate launch`` environment).

    Args:
        device: ``loop.device``: ``auto`` (what accelerate picks: CUDA if present), ``cpu``, ``cuda``.
        needs_unused_check: some items have no audio, so the adaptor gets no gradient from them;
            DDP must then look for unused parameters every step (slower, so only when needed).

    Returns:
        The accelerator; ``num_processes`` is 1 outside ``accelerate launch``/``torchrun``.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    process_state(device)
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=needs_unused_check)]
    return Accelerator(cpu=device == "cpu", kwargs_handlers=kwargs)


def is_sharded(accelerator) -> bool:
    """True under FSDP or DeepSpeed: parameters and optimizer state may live in shards."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def set_deepspeed_micro_batch(accelerator, batch_size: int) -> None:
    """DeepSpeed wants its per-GPU micro-batch before ``prepare``; there is no DataLoader to read it from."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin.is_auto("train_micro_batch_size_per_gpu"):
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(1, -(-batch_size // accelerator.num_processes))


@contextlib.contextmanager
def micro_step(accelerator, wrapped, sync: bool):
    """Backward of one micro-batch; gradients are all-reduced only when ``sync`` (the step's last).

    DDP skips its all-reduce inside ``no_sync``; DeepSpeed reads ``sync_gradients`` in
    ``accelerator.backward`` to place its accumulation boundary (and steps its engine there).
    """
    accelerator.gradient_state._set_sync_gradients(sync)
    try:
        if sync:
            yield
        else:
            with accelerator.no_sync(wrapped):
                yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's contiguous share of one global micro-batch (sizes differ by at most one).

    Args:
        indices: item indices of the global micro-batch, in epoch order.
        rank, world: this process's index and the number of processes.

    Returns:
        ``indices[start:stop]`` for this rank; empty when the micro-batch has fewer than
        ``world`` items and this rank is past them.
    """
    size, extra = divmod(len(indices), world)  # the first ``extra`` ranks take one more item
    start = rank * size + min(rank, extra)
    return indices[start:start + size + (rank < extra)]


def all_sum(accelerator, values: list[float]) -> list[float]:
    """Sum a few numbers over all processes (float64: exact for token counts up to 2^53)."""
    if accelerator.num_processes == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").tolist()


def gather_rng_states(accelerator, state: dict) -> list[dict] | None:
    """Every process's RNG state (rank order) for the checkpoint, or None on one process.

    Each rank draws its own dropout masks from its own stream, so an exact multi-process resume
    has to restore each rank's stream, not the main process's on every rank.
    """
    if accelerator.num_processes == 1:
        return None
    from accelerate.utils import gather_object

    return gather_object([state])


def save_sharded_checkpoint(accelerator, ckpt_dir: Path, write_extra) -> Path:
    """FSDP/DeepSpeed checkpoint: ``accelerator.save_state`` (collective) + the loop's own files.

    Args:
        ckpt_dir: final folder; it appears in one rename by the main process once all ranks wrote.
        write_extra: ``f(tmp_folder)`` run on the main process only (scheduler, state.json).
    """
    import shutil

    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(f".{ckpt_dir.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "accelerate"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_extra(tmp)
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        tmp.replace(ckpt_dir)
    accelerator.wait_for_everyone()
    return ckpt_dir


def load_sharded_checkpoint(accelerator, ckpt_dir: Path, scheduler):
    """Inverse of :func:`save_sharded_checkpoint`; returns the :class:`LoopState` to continue from."""
    from omnishift.train.checkpoint import LoopState

    ckpt_dir = Path(ckpt_dir)
    accelerator.load_state(str(ckpt_dir / "accelerate"))  # model, optimizer, per-rank RNGs
    scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
    return LoopState(**json.loads((ckpt_dir / "state.json").read_text())["loop"])


def save_final(accelerator, wrapped, model, final_dir: Path) -> None:
    """Write ``final/`` from the main process; under FSDP/DeepSpeed gather full weights first."""
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(wrapped) if is_sharded(accelerator) else None  # collective
    model.eval()
    if accelerator.is_main_process:
        model.save_pretrained(final_dir, state_dict=state)
    accelerator.wait_for_everyone()
