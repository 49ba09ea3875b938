"""Resumable training checkpoints: written atomically, read back without unpickling code.

A checkpoint is one folder ``out_dir/checkpoints/step-NNNNNNNN``::

    trainable.safetensors   every parameter with requires_grad (SpeechLLM-level names)
    optimizer.pt            optimizer.state_dict()   (tensors, numbers, strings only)
    scheduler.pt            scheduler.state_dict()
    state.json              step, epoch, batch position in the epoch, and the RNG states of
                            torch (CPU + CUDA), numpy and python ``random``, as plain lists
                            (``rng_ranks``: one per process of a multi-process DDP run)

Frozen weights are not stored: they are the base model's, rebuilt from the config. Everything is
loaded with ``torch.load(weights_only=True)`` or from safetensors/JSON, so a checkpoint cannot
run code. The folder appears in one rename (:func:`~omnishift.paths.atomic_dir`); a run killed
mid-write leaves only a hidden temp folder that :func:`latest_checkpoint` ignores.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from omnishift.paths import atomic_dir, atomic_write_text

_NAME = re.compile(r"^step-(\d+)$")


@dataclass
class LoopState:
    """Where the loop is: optimizer steps done, the next micro-batch (epoch, index in epoch), and
    how many items the epochs permute (a resume over different data would not continue the run)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    n_items: int = 0


def rng_state() -> dict:
    """All global RNG states as JSON-able lists."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": {"name": np_name, "keys": np_keys.tolist(), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": [py_version, list(py_state), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters (shared tensors appear once in named_parameters)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(ckpt_dir: Path, model, optimizer, scheduler, loop: LoopState,
                    rng_ranks: list[dict] | None = None) -> Path:
    """Write one checkpoint folder atomically (see the module docstring).

    Args:
        rng_ranks: every process's :func:`rng_state` in rank order (multi-process DDP runs, where
            each rank draws its own dropout masks); stored beside this process's ``rng``.
    """
    doc = {"loop": asdict(loop), "rng": rng_state()}
    if rng_ranks is not None:
        doc["rng_ranks"] = rng_ranks
    with atomic_dir(ckpt_dir) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_text(tmp / "state.json", json.dumps(doc) + "\n")
    return Path(ckpt_dir)


def load_checkpoint(ckpt_dir: Path, model, optimizer, scheduler, rank: int = 0, world: int = 1) -> LoopState:
    """Load a checkpoint into an identically set-up model/optimizer/scheduler; restores RNGs.

    Args:
        rank, world: this process and the number of processes; a checkpoint written by a run
            of the same world size restores this rank's own RNG stream, otherwise the main one's.

    Returns:
        The loop state to continue from.
    """
    ckpt_dir = Path(ckpt_dir)
    tensors = load_file(ckpt_dir / "trainable.safetensors")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != set(params):
        missing, extra = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
        raise ValueError(f"{ckpt_dir}: trainable parameters differ from this run's (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}); resume with the same method and model")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(tensors[n])
    device = next(iter(params.values())).device
    optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True, map_location=device))
    scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
    state = json.loads((ckpt_dir / "state.json").read_text())
    ranks = state.get("rng_ranks")
    set_rng_state(ranks[rank] if ranks is not None and len(ranks) == world else state["rng"])
    return LoopState(**state["loop"])


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under ``root`` as ``(step, path)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    dirs = checkpoint_dirs(root)
    return dirs[-1][1] if dirs else None


def checkpoint_path(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest checkpoints (0 keeps all)."""
    if keep_last <= 0:
        return
    for _, path in checkpoint_dirs(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
