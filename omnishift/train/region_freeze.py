"""``region_freeze``: Full-FT with the most text-important parameter entries held bitwise fixed.

Sec. 2 of the paper finds that a small set of parameters carries the LLM's text ability (zeroing
the top 3% by Taylor importance wrecks it) and that speech fine-tuning moves the importance away
from them. The direct counter-measure is to not move them at all: train everything as Full-FT
except the top ``fraction`` entries by the base model's TEXT importance, chosen globally over all
scored tensors with the exact streamed threshold of :mod:`omnishift.importance.threshold`.

Exactness: this method only names the entries (:attr:`ParamGroup.fixed`); the trainer zeroes
their gradients before clipping (so they neither count in the clip norm nor feed Adam's moments)
and, after every optimizer step, writes their saved values back. The write-back makes them
bitwise fixed even under AdamW's decoupled weight decay, which shrinks every entry of a tensor
whatever its gradient. Cost: one int64 index + one value per fixed entry (3% of the LLM).

This file is also the pattern for adding a method: an ``Options`` dataclass, a ``setup``
function, and one line in :data:`omnishift.train.methods.METHODS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from omnishift.importance.scores import SCORES_FILE
from omnishift.importance.threshold import stream_safetensors, top_k_masks
from omnishift.train.param_groups import setup_full


@dataclass
class Options:
    """Args: scores: TEXT score folder (or its scores.safetensors) of the base LLM;
    fraction: share of the scored entries kept fixed (paper's deactivation used 3%)."""

    scores: str
    fraction: float = 0.03


def scored_names(scores_file: Path) -> list[str]:
    """Tensor names in a score file, in file order."""
    from safetensors import safe_open

    with safe_open(str(scores_file), framework="pt") as f:
        return list(f.keys())


def top_fraction_indices(scores: str | Path, fraction: float, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Flat indices of the global top ``fraction`` entries by score, per parameter name.

    Args:
        scores: score folder or file; its tensor names must be parameter names of the LLM.
        fraction: in [0, 1]; ``round(fraction · total scored entries)`` are selected exactly.
        shapes: ``{parameter name: shape}`` of the LLM, to check the scores fit it.

    Returns:
        ``{name: int64 flat indices}`` for tensors with at least one selected entry.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"region_freeze fraction must lie in [0, 1], got {fraction}")
    path = Path(scores)
    file = path / SCORES_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: compute TEXT scores with `omnishift importance compute` first")
    names = scored_names(file)
    unknown = [n for n in names if n not in shapes]
    if unknown:
        raise ValueError(f"{file}: {len(unknown)} scored names are not LLM parameters (e.g. {unknown[0]}); "
                         "use scores of this same base LLM")
    source = stream_safetensors(file, names)
    total = sum(t.numel() for t in source())
    out = {}
    for name, mask in top_k_masks(source, round(fraction * total), names):
        if mask.shape != shapes[name]:
            raise ValueError(f"{file}: score {name} has shape {tuple(mask.shape)}, parameter has {tuple(shapes[name])}")
        idx = mask.reshape(-1).nonzero().squeeze(1)
        if idx.numel():
            out[name] = idx
    return out


def setup(model, options: Options):
    """Full-FT groups, with the top-``fraction`` entries of the LLM group marked fixed."""
    groups = setup_full(model, None)
    llm = next(g for g in groups if g.name == "llm")
    named = dict(model.llm.named_parameters())
    position = {id(p): i for i, p in enumerate(llm.params)}
    fixed = top_fraction_indices(options.scores, options.fraction, {n: p.shape for n, p in named.items()})
    llm.fixed = {position[id(named[n])]: idx.to(named[n].device) for n, idx in fixed.items()}
    llm.name = "llm.region_freeze"
    return groups
