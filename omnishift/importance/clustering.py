"""Rank clustering (paper Sec. 2.3.1, Fig. 1): do important parameters line up in rows and columns?

The paper marks the top-5% most important entries of one weight matrix (the "Top" region), shows
for every entry the share of its 3×3 vicinity inside that region, and reads row/column stripes off
the heatmap. It gives no number. :func:`rank_clustering_score` adds one: how much more of the region
lies in its busiest 5% of rows and columns than it would if the same number of cells were scattered
uniformly at random (1.0 = no clustering).

The grid plotting helper :func:`plot_grid` is shared with :mod:`omnishift.importance.change` (Fig. 4).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from omnishift.importance.scores import MODULES, load_scores, parse_param_name


def top_region(scores: torch.Tensor, fraction: float = 0.05) -> torch.Tensor:
    """The ``fraction`` most important entries of ONE matrix (the paper's "Top" region).

    Exactly ``round(fraction · numel)`` entries are marked (at least one when ``fraction > 0``).
    The threshold comes from ``kthvalue`` (O(n), no full sort of a 58M-entry MLP matrix); entries
    tied at the threshold are taken in row-major index order, so the result is deterministic.

    Args:
        scores: importance of one matrix, any shape (NaN is refused).
        fraction: share of the entries to mark, in [0, 1].

    Returns:
        A bool tensor of the shape of ``scores``.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    flat = scores.detach().reshape(-1).float()  # (numel,)
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN: the top region is undefined")
    n = flat.numel()
    k = min(n, max(1, round(fraction * n))) if fraction > 0 and n else 0
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    thr = flat.kthvalue(n - k + 1).values  # the k-th largest value
    above = flat > thr
    tied = flat == thr
    need = k - int(above.sum())
    mask = above | (tied & (tied.cumsum(0) <= need))  # first `need` ties in index order
    return mask.reshape(scores.shape)


def vicinity_density(mask: torch.Tensor) -> torch.Tensor:
    """Share of each cell's 3×3 vicinity (itself included) that lies in the region (Fig. 1's colour).

    At borders only cells that exist count: a corner averages 4 cells, an edge cell 6
    (``avg_pool2d(count_include_pad=False)``), so a border is not diluted by imaginary zeros.

    Args:
        mask: bool (H, W) region.

    Returns:
        float32 (H, W) in [0, 1].
    """
    if mask.dim() != 2:
        raise ValueError(f"vicinity density needs a 2-D mask, got shape {tuple(mask.shape)}")
    x = mask.float()[None, None]  # (1, 1, H, W) as pooling wants
    d = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)  # (1, 1, H, W)
    return d[0, 0]  # (H, W)


def downsample(x: torch.Tensor, max_side: int = 256, reduce: str = "mean") -> torch.Tensor:
    """Shrink a matrix for display: each side is capped at ``max_side`` independently.

    ``mean`` is a block mean (``adaptive_avg_pool2d``; blocks overlap by a cell when a side does
    not divide evenly). Note that a block mean dilutes a one-row stripe by the block height (a
    14336-row MLP matrix → blocks of 56 rows); ``max`` keeps thin stripes visible instead.

    Args:
        x: (H, W) matrix.
        max_side: largest side of the result.
        reduce: ``mean`` or ``max``.

    Returns:
        float32 (min(H, max_side), min(W, max_side)).
    """
    if x.dim() != 2:
        raise ValueError(f"downsample needs a 2-D matrix, got shape {tuple(x.shape)}")
    h, w = x.shape
    out = (min(h, max_side), min(w, max_side))
    if out == (h, w):
        return x.float()
    pool = {"mean": F.adaptive_avg_pool2d, "max": F.adaptive_max_pool2d}.get(reduce)
    if pool is None:
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    return pool(x.float()[None, None], out)[0, 0]  # (1, 1, H, W) -> (1, 1, h', w') -> (h', w')


def _top_lines(counts: torch.Tensor, k: int) -> torch.Tensor:
    """Bool (len(counts),) marking the k largest counts; ties go to the lower index (stable sort)."""
    order = torch.sort(counts, descending=True, stable=True).indices[:k]
    top = torch.zeros(counts.numel(), dtype=torch.bool)
    top[order] = True
    return top


def _line_share(rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int], line_fraction: float) -> float:
    """Share of the cells (given by their row and column indices, each (n,)) that lie in the
    top-``line_fraction`` rows ∪ columns ranked by how many of these cells they hold."""
    h, w = shape
    kr, kc = max(1, round(line_fraction * h)), max(1, round(line_fraction * w))
    top_r = _top_lines(torch.bincount(rows, minlength=h), kr)  # (H,)
    top_c = _top_lines(torch.bincount(cols, minlength=w), kc)  # (W,)
    return float((top_r[rows] | top_c[cols]).float().mean())


def _random_cells(n: int, total: int, gen: torch.Generator) -> torch.Tensor:
    """n distinct flat indices uniform over range(total), in O(n) memory.

    The distinct values of i.i.d. draws form a uniformly random subset given its size; a uniform
    subset of that is a uniform n-subset. This avoids a ``randperm(total)`` (470 MB for 58M cells).
    """
    if n > total // 2:
        return torch.randperm(total, generator=gen)[:n]
    got = torch.empty(0, dtype=torch.long)
    while got.numel() < n:
        draw = torch.randint(total, (int(n * 1.2) + 16,), generator=gen)
        got = torch.unique(torch.cat([got, draw]))
    return got[torch.randperm(got.numel(), generator=gen)[:n]]


def rank_clustering_score(mask: torch.Tensor, line_fraction: float = 0.05, seed: int = 0, trials: int = 5) -> dict:
    """How strongly a region concentrates in a few rows and columns, against random placement.

    ``share`` = region cells lying in the top-``line_fraction`` rows ∪ columns (ranked by region
    cells per row / column) over all region cells. ``random_share`` = the same share for the same
    number of cells placed uniformly without replacement, averaged over ``trials`` seeded draws.
    It is simulated rather than taken as the area of the lines (≈ 9.75 % at 5 %), because the top
    lines of a random mask are picked from that mask and so hold a little more than their area.

    Args:
        mask: bool (H, W) region, e.g. :func:`top_region`.
        line_fraction: share of the rows and of the columns counted as "the lines".
        seed: seed of the random placements.
        trials: number of random placements averaged.

    Returns:
        ``{"share", "random_share", "score"}`` with score = share / random_share: 1.0 = random,
        the ceiling is 1 / random_share (≈ 10 at 5 %); NaN for an empty mask.
    """
    if mask.dim() != 2:
        raise ValueError(f"rank clustering needs a 2-D mask, got shape {tuple(mask.shape)}")
    h, w = mask.shape
    idx = mask.reshape(-1).nonzero().squeeze(1)  # (n,) flat indices of region cells
    n = idx.numel()
    if n == 0:
        return {"share": math.nan, "random_share": math.nan, "score": math.nan}
    share = _line_share(idx // w, idx % w, (h, w), line_fraction)
    gen = torch.Generator().manual_seed(seed)
    rand = []
    for _ in range(max(1, trials)):
        r = _random_cells(n, h * w, gen)  # (n,)
        rand.append(_line_share(r // w, r % w, (h, w), line_fraction))
    random_share = sum(rand) / len(rand)
    return {"share": share, "random_share": random_share, "score": share / random_share}


def select_matrices(names, layer: int | None = None, modules=MODULES) -> list[str]:
    """Weight matrices of one decoder layer, one per module kind, in ``modules`` order.

    Args:
        names: parameter names (e.g. the keys of a score file).
        layer: decoder layer; None = the middle one, ``num_layers // 2`` with num_layers = the
            largest layer index in ``names`` + 1.
        modules: module kinds wanted (default: the 7 attention/MLP projections).

    Returns:
        The matching ``*.weight`` names (biases skipped).
    """
    names = list(names)
    keyed = [(n, parse_param_name(n)) for n in names if not n.endswith(".bias")]
    layers = {k.layer for _, k in keyed if k.layer is not None}
    if not layers:
        raise ValueError("no decoder-layer parameters among these names (need 'layers.<i>.')")
    if layer is None:
        layer = (max(layers) + 1) // 2
    order = {m: i for i, m in enumerate(modules)}
    picked = sorted((n for n, k in keyed if k.layer == layer and k.module in order),
                    key=lambda n: order[parse_param_name(n).module])
    if not picked:
        raise ValueError(f"no {'/'.join(modules)} matrices in layer {layer} (layers present: {sorted(layers)})")
    return picked


def plot_grid(panels: dict[str, dict[str, tuple[torch.Tensor, str]]], out_png: str | Path, title: str,
              colorbar_label: str, cmap: str = "magma") -> Path:
    """Rows = labels, columns = module kinds; every panel an (h, w) image in [0, 1], one colour bar.

    Args:
        panels: ``{row label: {parameter name: (image, panel title)}}``; columns follow the names'
            module kinds in first-seen order, a missing panel stays blank.
        out_png: written atomically (temp file + rename).
        title: figure title.
        colorbar_label: what the 0..1 scale means.
        cmap: matplotlib colour map.

    Returns:
        ``out_png`` as a Path.
    """
    from omnishift.plotting import pyplot, save_figure

    plt = pyplot()
    cols: list[str] = []
    for row in panels.values():
        cols += [m for m in (parse_param_name(n).module for n in row) if m not in cols]
    if not panels or not cols:
        raise ValueError("nothing to plot")
    fig, axes = plt.subplots(len(panels), len(cols), figsize=(2.3 * len(cols) + 1, 2.4 * len(panels)),
                             squeeze=False, layout="constrained")
    im = None
    for i, (label, row) in enumerate(panels.items()):
        by_kind = {parse_param_name(n).module: v for n, v in row.items()}
        for j, kind in enumerate(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=11)
            if kind not in by_kind:
                ax.set_title(f"{kind}\n(missing)", fontsize=8)
                continue
            img, sub = by_kind[kind]
            im = ax.imshow(img.numpy(), vmin=0.0, vmax=1.0, cmap=cmap, aspect="auto", interpolation="nearest")
            ax.set_title(sub, fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9, label=colorbar_label)
    fig.suptitle(title)
    return save_figure(fig, out_png, dpi=110, tight=False)


def plot_rank_clustering(score_dirs: dict[str, str | Path], out_png: str | Path, layer: int | None = None,
                         fraction: float = 0.05, max_side: int = 256) -> tuple[Path, dict]:
    """Fig. 1: vicinity density of each matrix's Top region, one row per score folder.

    Args:
        score_dirs: ``{label: score folder}``, e.g. ``{"text": ..., "speech": ...}``.
        out_png: the figure.
        layer: decoder layer shown; None = the middle one.
        fraction: Top-region share per matrix (paper: 5 %).
        max_side: display resolution cap per side (block mean of the density).

    Returns:
        ``(png path, {label: {matrix name: rank_clustering_score dict}})``.
    """
    panels, scores_out = {}, {}
    for label, d in score_dirs.items():
        panels[label], scores_out[label] = {}, {}
        for name, s in load_scores(d, lambda names: select_matrices(names, layer, MODULES))[0].items():
            if s.dim() != 2:
                continue
            region = top_region(s, fraction)  # (H, W) bool
            rc = rank_clustering_score(region)
            scores_out[label][name] = rc
            k = parse_param_name(name)
            panels[label][name] = (downsample(vicinity_density(region), max_side),
                                   f"L{k.layer} {k.module} {tuple(s.shape)}\nclustering ×{rc['score']:.2f}")
    plot_grid(panels, out_png, f"Top-{fraction:.0%} region, 3×3 vicinity density (rank clustering)",
              "share of 3×3 vicinity in Top region")
    return Path(out_png), scores_out
