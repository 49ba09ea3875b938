"""Check the Taylor estimate against eq. 1: the exact loss change when one parameter is zeroed.

For a random sample of single parameters (spread across layers and module kinds) we compute
``|L(θ) - L(θ | θ_i = 0)|`` exactly on one fixed batch and the Taylor score ``|∂L/∂θ_i · θ_i|``
on the same batch, and report their Spearman rank correlation. Zeroing one of 10^8 weights moves
the loss by ~1e-6 or less, below float32 resolution of a loss near 2, so the check runs the
model in float64 by default.
"""

from __future__ import annotations

import copy
import random

import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from omnishift.importance.estimator import _no_labels, response_nll_sum
from omnishift.importance.scores import parse_param_name


def sample_parameters(params: dict[str, torch.Tensor], n: int, seed: int = 0) -> list[tuple[str, int]]:
    """``n`` (name, flat index) pairs, cycling over (layer, module) groups so all kinds appear."""
    rng = random.Random(seed)
    groups: dict[tuple, list[str]] = {}
    for name in sorted(params):
        groups.setdefault(tuple(parse_param_name(name)), []).append(name)
    keys = list(groups)
    rng.shuffle(keys)
    picks = []
    while len(picks) < n:
        for key in keys:
            if len(picks) == n:
                break
            name = rng.choice(groups[key])
            picks.append((name, rng.randrange(params[name].numel())))
    return picks


@torch.no_grad()
def _loss(model, batch) -> float:
    nll, n = response_nll_sum(model(_no_labels(batch)).logits, batch["labels"])
    return float(nll) / n


def validate_taylor(model, items: list[dict], n: int = 200, seed: int = 0, dtype=torch.float64,
                    progress: bool = True) -> dict:
    """Spearman correlation between Taylor scores and exact single-parameter ablation (eq. 1 vs 2).

    Args:
        model: a :class:`SpeechLLM`; a copy is cast to ``dtype`` (the original is untouched).
        items: the processor items forming the one fixed batch.
        n: how many parameters to ablate.
        seed: sample seed.
        dtype: computation dtype (float64 keeps tiny loss changes above rounding noise).

    Returns:
        ``{"spearman", "p_value", "n", "base_loss", "rows": [{name, index, taylor, exact}]}``.
    """
    m = copy.deepcopy(model).to(dtype).eval()
    batch = m.processor(items)
    for key in ("input_features", "encoder_states"):
        if key in batch:
            batch[key] = batch[key].to(dtype)
    params = dict(m.llm.named_parameters())
    m.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    nll, count = response_nll_sum(m(_no_labels(batch)).logits, batch["labels"])
    grads = dict(zip(params, torch.autograd.grad(nll / count, list(params.values()))))
    base = float(nll.detach()) / count
    rows = []
    with torch.no_grad():
        for name, idx in tqdm(sample_parameters(params, n, seed), desc="eq.1 ablation", disable=not progress):
            flat = params[name].view(-1)
            old = flat[idx].clone()
            taylor = abs(float(grads[name].view(-1)[idx] * old))
            flat[idx] = 0
            exact = abs(_loss(m, batch) - base)
            flat[idx] = old
            rows.append({"name": name, "index": idx, "taylor": taylor, "exact": exact})
    rho, p = spearmanr([r["taylor"] for r in rows], [r["exact"] for r in rows])
    return {"spearman": float(rho), "p_value": float(p), "n": len(rows), "base_loss": base,
            "dtype": str(dtype).replace("torch.", ""), "rows": rows}
