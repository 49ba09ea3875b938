"""Deactivation (paper Sec. 2.2, Table 1): zero the top / bottom / random k% by importance.

If the Taylor scores mean what they claim, zeroing the top 3% should wreck the model (PPL up by
orders of magnitude), the bottom 3% should barely matter, and a random 3% should sit between.
The threshold is global over all scored tensors by default (``per_matrix=True`` ranks inside each
tensor instead) and is found exactly by streaming radix selection (:mod:`.threshold`), so the same
code serves an 8B model whose scores do not fit in memory at once.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from omnishift.importance.estimator import _no_labels, response_nll_sum
from omnishift.importance.scores import SCORES_FILE, parse_param_name
from omnishift.importance.threshold import bottom_k_masks, stream_safetensors, top_k_masks
from omnishift.paths import atomic_write_text

STRATEGIES = ("top", "bottom", "random")


@torch.no_grad()
def perplexity(model, items: list[dict], batch_size: int = 4, progress: bool = False) -> float:
    """exp(mean response-token NLL) of ``model`` on processor items."""
    nll, count = 0.0, 0
    for i in tqdm(range(0, len(items), batch_size), desc="ppl", disable=not progress, leave=False):
        batch = model.processor(items[i:i + batch_size])
        s, n = response_nll_sum(model(_no_labels(batch)).logits, batch["labels"])
        nll, count = nll + float(s), count + n
    if count == 0:
        raise ValueError("no response tokens: perplexity needs items with a 'response'")
    return math.exp(nll / count)


def _masks(scores_file: Path, names: list[str], strategy: str, fraction: float, per_matrix: bool, seed: int):
    """Yield (name, bool mask) for the chosen strategy."""
    if strategy == "random":
        g = torch.Generator().manual_seed(seed)
        for name, t in zip(names, stream_safetensors(scores_file, names)()):
            flat = torch.zeros(t.numel(), dtype=torch.bool)
            flat[torch.randperm(t.numel(), generator=g)[: round(fraction * t.numel())]] = True
            yield name, flat.view(t.shape)
        return
    select = top_k_masks if strategy == "top" else bottom_k_masks
    groups = [[n] for n in names] if per_matrix else [names]
    for group in groups:
        source = stream_safetensors(scores_file, group)
        total = sum(t.numel() for t in source())
        yield from select(source, round(fraction * total), group)


def deactivation_table(model, scores_dir: str | Path, sets: dict[str, list[dict]], fraction: float = 0.03,
                       per_matrix: bool = False, seed: int = 0, batch_size: int = 4, progress: bool = True,
                       scope: str = "layers") -> list[dict]:
    """Perplexity on each held-out set before and after zeroing top/bottom/random ``fraction``.

    Args:
        model: a :class:`SpeechLLM` whose ``llm`` parameter names match the score file.
        scores_dir: score folder (or file) from :func:`compute_importance`.
        sets: ``{"text": items, "speech": items}`` (any names) of held-out processor items.
        fraction: share of scored parameters to zero (paper: 0.03).
        per_matrix: rank within each tensor instead of globally.
        scope: ``layers`` (default): the weight matrices of the decoder layers (q/k/v/o,
            gate/up/down), where the paper's analysis lives; ``all``: every scored tensor,
            embeddings and norms included. With ``all``, a small scoring set gives exactly zero
            importance to the embedding rows of every token it never contains, so "bottom k%"
            zeroes tokens the held-out text does use (measured on SmolLM2: PPL 8.3 -> 36).

    Returns:
        One row per set: ``{"input", "base", "top", "bottom", "random", "zeroed"}``; the model
        is restored bit for bit afterwards.
    """
    scores_file = Path(scores_dir) / SCORES_FILE if Path(scores_dir).is_dir() else Path(scores_dir)
    params = dict(model.llm.named_parameters())
    names = list(stream_names(scores_file))
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"{scores_file}: {len(unknown)} scored names not in this model (e.g. {unknown[0]}); "
                         "score and deactivate the same architecture")
    if scope == "layers":
        names = [n for n in names if parse_param_name(n).layer is not None and params[n].dim() == 2]
    elif scope != "all":
        raise ValueError(f"scope {scope!r} unknown: use 'layers' (decoder-layer matrices) or 'all'")
    rows = {name: {"input": name, "base": perplexity(model, items, batch_size)} for name, items in sets.items()}
    zeroed = {}
    for strategy in tqdm(STRATEGIES, desc="deactivation", disable=not progress):
        saved, count = {}, 0
        with torch.no_grad():
            for name, mask in _masks(scores_file, names, strategy, fraction, per_matrix, seed):
                if mask.any():
                    saved[name] = (mask, params[name].data[mask].clone())
                    params[name].data[mask] = 0
                    count += int(mask.sum())
        try:
            for set_name, items in sets.items():
                rows[set_name][strategy] = perplexity(model, items, batch_size)
        finally:
            with torch.no_grad():
                for name, (mask, values) in saved.items():
                    params[name].data[mask] = values
        zeroed[strategy] = count
    for r in rows.values():
        r["zeroed"] = zeroed
    return list(rows.values())


def stream_names(scores_file: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(scores_file), framework="pt") as f:
        return list(f.keys())


def write_table(rows: list[dict], out_dir: str | Path, fraction: float, label: str = "") -> tuple[Path, Path]:
    """Table 1 as Markdown and CSV in ``out_dir`` (``deactivation.md`` / ``deactivation.csv``)."""
    out_dir = Path(out_dir)
    pct = f"{fraction * 100:g}%"
    md = [f"| Model | Input | Base | Top {pct} | Bottom {pct} | Random {pct} |", "|---|---|---|---|---|---|"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "input", "base", "top", "bottom", "random", "fraction", "zeroed_top"])
    for r in rows:
        md.append(f"| {label} | {r['input']} | " + " | ".join(_fmt(r[k]) for k in ("base", *STRATEGIES)) + " |")
        w.writerow([label, r["input"], *(f"{r[k]:.6g}" for k in ("base", *STRATEGIES)), fraction, r["zeroed"]["top"]])
    atomic_write_text(out_dir / "deactivation.md", "\n".join(md) + "\n")
    atomic_write_text(out_dir / "deactivation.csv", buf.getvalue())
    return out_dir / "deactivation.md", out_dir / "deactivation.csv"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x < 1e4 else f"{x:.2e}"
