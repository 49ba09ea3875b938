"""Parameter-change heatmaps (paper Sec. 3.3.2, Fig. 4): where does each fine-tuning method write?

Full fine-tuning and layer-wise LR change W directly, so ΔW = |W_ft − W_base|. LoRA's change is
ΔW = scale · B·A with scale = lora_alpha / r (lora_alpha / √r under rsLoRA); it is rebuilt from the
adapter rather than from merged weights, so no second copy of the model is needed. Every delta is
keyed by the base parameter name (``model.layers.L.self_attn.q_proj.weight``), the same key as the
importance scores, and plotted with the grid of :mod:`omnishift.importance.clustering`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from omnishift.importance.clustering import downsample, plot_grid, rank_clustering_score, top_region
from omnishift.importance.scores import parse_param_name

# <anything>base_model.model.<module path>.lora_<A|B>[.<adapter>].weight
_LORA_RE = re.compile(r"^(?:.*?base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def _find(state: dict, name: str):
    """``state[name]``, or the one key ending in ``.name`` (e.g. a SpeechLLM ``llm.``-prefixed state)."""
    if name in state:
        return state[name]
    hits = [k for k in state if k.endswith("." + name)]
    if len(hits) != 1:
        raise KeyError(f"{name}: {'not found' if not hits else f'ambiguous ({hits[:3]})'} in the state dict")
    return state[hits[0]]


def weight_deltas(base_state: dict, tuned_state: dict, names) -> dict[str, torch.Tensor]:
    """|W_ft − W_base| of the named parameters (full fine-tuning, layer-wise LR, region freezing).

    Args:
        base_state, tuned_state: ``{name: tensor}`` (state dicts; keys may carry a prefix such as
            ``llm.``, matched by suffix).
        names: base parameter names to compare.

    Returns:
        ``{name: fp32 |ΔW|}``; the difference is taken in fp32 so bf16 weights do not round it away.
    """
    out = {}
    for n in names:
        a, b = _find(base_state, n), _find(tuned_state, n)
        if a.shape != b.shape:
            raise ValueError(f"{n}: base {tuple(a.shape)} vs tuned {tuple(b.shape)}")
        out[n] = (b.detach().float() - a.detach().float()).abs()
    return out


def _load_adapter(folder: Path) -> tuple[dict, dict]:
    """``(state, adapter_config)`` of a folder written by ``PeftModel.save_pretrained``."""
    from safetensors.torch import load_file

    cfg_file, st = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not cfg_file.is_file() or not st.is_file():
        raise FileNotFoundError(f"{folder}: expected adapter_config.json + adapter_model.safetensors (a saved PEFT adapter)")
    return load_file(str(st)), json.loads(cfg_file.read_text())


def _config_scale(cfg: dict, module: str, r: int) -> float:
    """lora_alpha / r for ``module``, honouring peft's ``alpha_pattern`` and ``use_rslora``."""
    from peft.utils.other import get_pattern_key

    alpha_pattern = cfg.get("alpha_pattern") or {}
    alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), cfg["lora_alpha"])
    return alpha / (r ** 0.5 if cfg.get("use_rslora") else r)


def lora_deltas(peft_model_or_adapter_state, names=None, scale: float | dict | None = None,
                adapter: str = "default") -> dict[str, torch.Tensor]:
    """|ΔW| = |scale · B·A| of a LoRA adapter, keyed by base parameter name.

    Args:
        peft_model_or_adapter_state: a ``PeftModel`` (or any module holding peft LoRA layers, e.g.
            a SpeechLLM whose ``llm`` is wrapped); a saved adapter folder (``adapter_config.json`` +
            ``adapter_model.safetensors``, whose keys drop the adapter name); or a raw state dict
            with ``...lora_A[.adapter].weight`` / ``...lora_B[...].weight`` keys.
        names: base names wanted (``model.layers.0.self_attn.q_proj.weight``); None = every adapted one.
        scale: lora_alpha / r as a float, or ``{base name: scale}``; None = read it from the model's
            ``scaling`` or the folder's config (a raw state dict needs it given).
        adapter: adapter name inside a live model or unsaved state dict.

    Returns:
        ``{base name: fp32 |ΔW|}`` of shape (out_features, in_features).
    """
    src, cfg, scales = peft_model_or_adapter_state, None, {}
    if isinstance(src, (str, Path)):
        state, cfg = _load_adapter(Path(src))
        if cfg.get("use_dora"):
            raise ValueError(f"{src}: DoRA adapters rescale W by a magnitude vector; ΔW ≠ scale·B·A")
    elif isinstance(src, torch.nn.Module):
        state = {n: p for n, p in src.named_parameters()}
        for mname, mod in src.named_modules():  # peft LoraLayer keeps {adapter: alpha / r}
            if isinstance(getattr(mod, "scaling", None), dict) and adapter in mod.scaling:
                m = _LORA_RE.match(mname + ".lora_A.weight")
                scales[m.group("module") + ".weight"] = float(mod.scaling[adapter])
    else:
        state = dict(src)

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in state.items():
        m = _LORA_RE.match(key)
        if m and (m.group("adapter") in (None, adapter)):
            pairs.setdefault(m.group("module") + ".weight", {})[m.group("ab")] = t
    wanted = list(pairs) if names is None else list(names)
    out = {}
    for n in wanted:
        ab = pairs.get(n)
        if not ab or set(ab) != {"A", "B"}:
            raise KeyError(f"{n}: no lora_A/lora_B pair for it (adapted: {sorted(pairs)[:4]}...)")
        a, b = ab["A"].detach().float(), ab["B"].detach().float()  # A: (r, in), B: (out, r)
        if isinstance(scale, dict):
            s = scale[n]
        elif scale is not None:
            s = scale
        elif cfg is not None:
            s = _config_scale(cfg, n[: -len(".weight")], a.shape[0])
        elif n in scales:
            s = scales[n]
        else:
            raise ValueError(f"{n}: pass scale= (lora_alpha / r) for a raw adapter state dict")
        delta = s * (b @ a)  # (out, r) @ (r, in) -> (out, in)
        if cfg is not None and cfg.get("fan_in_fan_out"):
            delta = delta.T  # GPT-2 Conv1D stores W as (in, out)
        out[n] = delta.abs()
    return out


def normalize(delta: torch.Tensor) -> torch.Tensor:
    """|ΔW| / max |ΔW| of one matrix, in [0, 1] (Fig. 4 "after normalization").

    Per matrix, so the heatmap shows WHERE a method writes inside a matrix, not how much more one
    method or matrix moves than another (the raw magnitudes differ by orders between full and LoRA).
    An all-zero delta stays zero.
    """
    d = delta.detach().abs().float()
    top = d.max() if d.numel() else torch.tensor(0.0)
    return d / top if top > 0 else torch.zeros_like(d)


def plot_change_heatmaps(deltas_by_label: dict[str, dict[str, torch.Tensor]], out_png: str | Path,
                         max_side: int = 256, fraction: float | None = 0.05) -> Path:
    """Fig. 4: normalised |ΔW| heatmaps, one row per fine-tuning method, one column per matrix.

    Args:
        deltas_by_label: ``{method: {base name: |ΔW|}}``, e.g. from :func:`weight_deltas` and
            :func:`lora_deltas` on the same :func:`~omnishift.importance.clustering.select_matrices`.
        out_png: the figure (atomic write).
        max_side: display resolution cap per side (block mean).
        fraction: when set, each title also carries the rank-clustering score of the top-``fraction``
            |ΔW| cells, putting a number on the paper's "LoRA clusters more in rows and columns".

    Returns:
        ``out_png`` as a Path.
    """
    panels = {}
    for label, deltas in deltas_by_label.items():
        panels[label] = {}
        for name, d in deltas.items():
            k = parse_param_name(name)
            sub = f"L{k.layer} {k.module} {tuple(d.shape)}"
            if fraction:
                sub += f"\nclustering ×{rank_clustering_score(top_region(d, fraction))['score']:.2f}"
            panels[label][name] = (downsample(normalize(d), max_side), sub)
    return plot_grid(panels, out_png, "Parameter change |ΔW| (normalised per matrix)", "|ΔW| / max |ΔW|",
                     cmap="viridis")


def change_summary(deltas_by_label: dict[str, dict[str, torch.Tensor]], fraction: float = 0.05) -> dict:
    """The numbers behind Fig. 4, per method and matrix: largest |ΔW|, the row and column that
    changed most (summed |ΔW|) and the rank-clustering score of the top-``fraction`` cells.

    Returns:
        ``{method: {matrix name: {"max_abs", "top_row", "top_col", "clustering"}}}`` (JSON-ready).
    """
    out = {}
    for label, deltas in deltas_by_label.items():
        out[label] = {}
        for name, d in deltas.items():
            a = d.detach().abs().float()
            out[label][name] = {"max_abs": float(a.max()), "top_row": int(a.sum(1).argmax()),
                                "top_col": int(a.sum(0).argmax()),
                                "clustering": rank_clustering_score(top_region(a, fraction))["score"]}
    return out
