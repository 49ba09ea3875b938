"""Layer-wise importance distributions, their shift under fine-tuning, and eq. 3 LR coefficients.

Paper Sec. 2.3.2 (Fig. 2-3): I_layer(i), the summed importance of decoder layer i normalised over
layers, moves when the LLM is fine-tuned on speech. :func:`compare_layers` puts numbers on that
shift; :func:`layer_lr_coefficients` turns the base model's text distribution into the layer-wise
learning-rate scales of eq. 3 (layers that matter more for text get smaller updates).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from omnishift.importance.scores import aggregate, load_scores
from omnishift.paths import atomic_write_text


def layer_vector(scores: dict[str, torch.Tensor]) -> np.ndarray:
    """Summed importance per decoder layer (not normalised), layer order."""
    layers, _ = aggregate(scores)
    if not layers:
        raise ValueError("no decoder-layer parameters in these scores (names need 'layers.<i>.')")
    if sorted(layers) != list(range(len(layers))):
        raise ValueError(f"scores cover layers {sorted(layers)}, expected 0..{len(layers) - 1}")
    return np.array([layers[i] for i in range(len(layers))], dtype=np.float64)


def layer_lr_coefficients(layer_importance, lam: float = 0.4) -> dict[int, float]:
    """eq. 3: lr(i) = 1 - λ·(I(i) - min I)/(max I - min I).

    Args:
        layer_importance: I_layer per layer (a sequence; normalisation does not change the result).
        lam: λ in [0, 1] (paper: 0.4); the most important layer gets 1 - λ, the least 1.

    Returns:
        ``{layer index: coefficient}``; all 1.0 when every layer is equally important.
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"λ must lie in [0, 1] so coefficients stay in [1-λ, 1]; got {lam}")
    v = np.asarray(layer_importance, dtype=np.float64)
    span = v.max() - v.min()
    coef = np.ones_like(v) if span == 0 else 1.0 - lam * (v - v.min()) / span
    return {i: float(c) for i, c in enumerate(coef)}


def write_layer_lr(scores_dir: str | Path, out_json: str | Path, lam: float = 0.4) -> dict:
    """Compute eq. 3 from a TEXT score folder and write ``{"lambda", "source", "coefficients"}``."""
    scores, meta = load_scores(scores_dir)
    if meta.get("modality", "text") != "text":
        raise ValueError(f"{scores_dir}: eq. 3 uses the base model's TEXT importance, these scores are {meta['modality']!r}")
    coef = layer_lr_coefficients(layer_vector(scores), lam)
    doc = {"lambda": lam, "source": str(scores_dir), "coefficients": {str(k): v for k, v in coef.items()}}
    atomic_write_text(out_json, json.dumps(doc, indent=2) + "\n")
    return doc


def _thirds(p: np.ndarray) -> dict[str, float]:
    edges = np.linspace(0, len(p), 4).round().astype(int)
    return {name: float(p[a:b].sum()) for name, a, b in zip(("first", "middle", "last"), edges[:-1], edges[1:])}


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = same, 1 = disjoint)."""
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a, b):
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / b[nz])).sum())

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def compare_layers(a: np.ndarray, b: np.ndarray) -> dict:
    """Shift from layer vector ``a`` (e.g. base) to ``b`` (e.g. fine-tuned).

    Returns:
        JS divergence, Spearman ρ across layers, peak layers, total-mass ratio b/a, and each
        distribution's share of mass in the first/middle/last third of the layers.
    """
    if len(a) != len(b):
        raise ValueError(f"layer counts differ ({len(a)} vs {len(b)}): compare checkpoints of one architecture")
    pa, pb = a / a.sum(), b / b.sum()
    return {
        "js_divergence_bits": js_divergence(pa, pb),
        "spearman_layers": float(spearmanr(pa, pb)[0]),
        "peak_layer": {"a": int(pa.argmax()), "b": int(pb.argmax())},
        "total_mass_ratio": float(b.sum() / a.sum()),
        "thirds": {"a": _thirds(pa), "b": _thirds(pb)},
    }


def compare_score_dirs(a: str | Path, b: str | Path) -> dict:
    """:func:`compare_layers` on two score folders."""
    return {"a": str(a), "b": str(b), **compare_layers(layer_vector(load_scores(a)[0]), layer_vector(load_scores(b)[0]))}


def plot_layer_distributions(runs: dict[str, str | Path], out_png: str | Path, title: str = "") -> Path:
    """Fig. 2-3: normalised I_layer(i) of several checkpoints on one plot."""
    from omnishift.plotting import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(8, 4))
    for label, path in runs.items():
        v = layer_vector(load_scores(path)[0])
        ax.plot(range(len(v)), v / v.sum(), marker="o", ms=3, label=label)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("share of importance")
    ax.set_title(title or "Layer-wise textual importance")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out_png)
