"""The stages that read parameter importance: base-model scores (Fig. 1, eq. 3), Table 1, the
scores of every trained model, the distribution shift (Fig. 2-3) and the weight change (Fig. 4)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omnishift.paths import atomic_write_text
from omnishift.pipeline.context import Context
from omnishift.report.names import display


def _score(ctx: Context, model_dir: Path | None, modality: str, out: Path, meta: dict, load) -> Path:
    """One importance pass on the training manifest: reused when ``out`` holds a complete one from the
    same model, items and settings (by content), computed (or resumed) otherwise."""
    from omnishift.data.items import build_items
    from omnishift.importance.estimator import ImportanceConfig, compute_importance

    imp = ctx.cfg.importance
    settings = {k: v for k, v in dataclasses.asdict(imp).items() if k in ("mode", "fraction", "limit", "batch_size",
                                                                          "max_response_tokens", "seed")}
    inputs = {"model": ctx.model_fp(model_dir), "items": ctx.data_fp("train"), "modality": modality, **settings}
    done = lambda d: (d / "modules.csv").is_file() and (d / "scores.safetensors").is_file()  # noqa: E731
    if ctx.reuse(out, inputs, f"importance pass ({meta['model']}, {modality})", done):
        return out
    model = load()
    items, info = build_items(str(ctx.train_manifest), modality, limit=imp.limit,
                              max_response_tokens=imp.max_response_tokens, tokenizer=model.tokenizer)
    cfg = ImportanceConfig(mode=imp.mode, modality=modality, fraction=imp.fraction, batch_size=imp.batch_size,
                           seed=imp.seed)
    return compute_importance(model, items, cfg, out, extra_meta={**meta, "data": info})


def stage_importance(ctx: Context, out: Path) -> dict:
    """Base-model importance per modality, eq. 3 coefficients, Fig. 1 (rank clustering)."""
    from omnishift.importance.clustering import plot_rank_clustering
    from omnishift.importance.shift import write_layer_lr

    imp = ctx.cfg.importance
    dirs = {}
    for i, modality in enumerate(imp.modalities, 1):
        dirs[modality] = _score(ctx, None, modality, out / "base" / modality, {"model": "base"}, ctx.base_model)
        ctx.progress.step("base importance", i, len(imp.modalities), modality)
    info = {"modalities": list(dirs)}
    if "text" in dirs:
        write_layer_lr(dirs["text"], out / "layer_lr.json", imp.lam)
        info["layer_lr"] = str(out / "layer_lr.json")
    png, scores = plot_rank_clustering(dirs, out / "fig1_rank_clustering.png", layer=imp.layer,
                                       fraction=imp.cluster_fraction)
    atomic_write_text(out / "fig1_rank_clustering.json", json.dumps(scores, indent=2) + "\n")
    return info


def stage_deactivation(ctx: Context, out: Path) -> dict:
    """Table 1: held-out PPL (text and speech input) after zeroing top / bottom / random k%."""
    if not ctx.cfg.deactivation.enabled:
        return {"skipped": "deactivation.enabled is false"}
    rows = _table1(ctx, ctx.base_model(), ctx.text_scores("deactivation"), out, Path(str(ctx.cfg.model.llm)).name)
    return {"rows": len(rows)}


def _table1(ctx: Context, model, scores: Path, out: Path, label: str) -> list[dict]:
    """Table 1 of one model: held-out PPL with text and speech input after zeroing by ``scores``."""
    from omnishift.data.items import build_items
    from omnishift.importance.deactivate import deactivation_table, write_table

    d = ctx.cfg.deactivation
    src = str(ctx.heldout_manifest())
    sets = {m: build_items(src, m, limit=d.limit, max_response_tokens=d.max_response_tokens,
                           tokenizer=model.tokenizer)[0] for m in ("text", "speech")}
    rows = deactivation_table(model, scores, sets, fraction=d.fraction, scope=d.scope, batch_size=d.batch_size,
                              progress=ctx.progress.stream is not None)
    write_table(rows, out, d.fraction, label=label)
    atomic_write_text(out / "rows.json", json.dumps({"fraction": d.fraction, "scope": d.scope, "model": label,
                                                     "rows": rows}, indent=2) + "\n")
    return rows


def stage_deactivation_after(ctx: Context, out: Path) -> dict:
    """Table 1 on the Stage-1 models of ``deactivation.after_training``, each zeroed by its own
    textual importance: is the small text-critical core still there, and does speech input lean on it?"""
    d = ctx.cfg.deactivation
    if not d.enabled or not d.after_training:
        return {"skipped": "deactivation.after_training lists no method"}
    after = ctx.require("importance_after", "Table 1 on the Stage-1 models")
    for i, label in enumerate(d.after_training, 1):
        _table1(ctx, load_trained(ctx.final(label)), after / label, out / label, display(label))
        ctx.progress.step("Table 1 after training", i, len(d.after_training), label)
    return {"methods": list(d.after_training)}


def load_trained(final: Path):
    """A trained speech LLM with any LoRA adapter merged (parameter names = the base LLM's)."""
    from peft import PeftModel

    from omnishift.models.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(final)
    if isinstance(model.llm, PeftModel):
        model.llm = model.llm.merge_and_unload()
    return model


def stage_importance_after(ctx: Context, out: Path) -> dict:
    """TEXT importance of every trained model, on the same items as the base model's."""
    if not ctx.cfg.importance.after_training:
        return {"skipped": "importance.after_training is false"}
    methods, waiting = list(ctx.cfg.train.methods), []
    for i, label in enumerate(methods, 1):
        if not ctx.mine(i - 1):
            continue
        if ctx.shard is not None and not ctx.trained(label):
            waiting.append(label)  # still training in another process
            continue
        final = ctx.final(label)
        _score(ctx, final, "text", out / label, {"model": label}, lambda f=final: load_trained(f))
        ctx.progress.step("importance after training", i, len(methods), label)
    if waiting and ctx.progress.stream is not None:
        print(f"importance_after: skipped {waiting}, not trained yet; run the shard again later",
              file=ctx.progress.stream, flush=True)
    return {"methods": methods}


def stage_shift(ctx: Context, out: Path) -> dict:
    """Fig. 2 (base vs Full-FT), Fig. 3 (base vs every method) and the shift metrics."""
    from omnishift.importance.scores import load_scores
    from omnishift.importance.shift import compare_layers, layer_vector, plot_layer_distributions
    from omnishift.train.methods import METHODS

    base = ctx.text_scores("the distribution-shift plots")
    after = ctx.require("importance_after", "the distribution-shift plots")
    labels = [m for m in ctx.cfg.train.methods if (after / m / "modules.csv").is_file()]
    if not labels:
        return {"skipped": "no importance after training (importance.after_training is false or no methods)"}
    metrics, base_vec = {}, layer_vector(load_scores(base)[0])
    for m in labels:
        metrics[m] = {"method": ctx.method_name(m), **compare_layers(base_vec, layer_vector(load_scores(after / m)[0]))}
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    full = [m for m in labels if METHODS[metrics[m]["method"]].full_llm]
    if full:
        plot_layer_distributions({"base": base, **{display(m): after / m for m in full}}, out / "fig2_layers_full.png",
                                 title="Layer-wise textual importance before and after full fine-tuning")
    plot_layer_distributions({"base": base, **{display(m): after / m for m in labels}}, out / "fig3_layers_methods.png",
                             title="Layer-wise textual importance before and after each fine-tuning method")
    return {"methods": labels}


def stage_change(ctx: Context, out: Path) -> dict:
    """Fig. 4: normalised |ΔW| heatmaps of one layer for every method that changes the LLM."""
    from omnishift.importance.change import lora_deltas, plot_change_heatmaps, weight_deltas
    from omnishift.importance.clustering import rank_clustering_score, select_matrices, top_region
    from omnishift.models.defaults import load_llm
    from omnishift.train.methods import METHODS

    layer, deltas, base_state = ctx.cfg.importance.layer, {}, None
    for label in ctx.cfg.train.methods:
        final = ctx.final(label)
        if not METHODS[ctx.method_name(label)].changes_llm:
            continue  # the LLM is the base model: nothing to draw
        meta = json.loads((final / "omnishift_config.json").read_text())
        if meta["llm_format"] == "peft":
            d = lora_deltas(final / "llm_adapter")
            deltas[display(label)] = {n: d[n] for n in select_matrices(list(d), layer)}
            continue
        if base_state is None:
            base_state = ctx.base_model().llm.state_dict()
        tuned = load_llm(final / "llm")[0].state_dict()
        deltas[display(label)] = weight_deltas(base_state, tuned, select_matrices(list(tuned), layer))
    if not deltas:
        return {"skipped": "no method changed the LLM"}
    plot_change_heatmaps(deltas, out / "fig4_change.png")
    scores = {lab: {n: rank_clustering_score(top_region(d, ctx.cfg.importance.cluster_fraction))["score"]
                    for n, d in per.items()} for lab, per in deltas.items()}
    atomic_write_text(out / "clustering.json", json.dumps(scores, indent=2) + "\n")
    return {"methods": list(deltas)}
