"""The ``align`` stage: the alignment recipe (:mod:`omnishift.align.recipe`) run into ``align/``, on
the experiment's base model, through the same code as ``omnishift align NAME``. Its parts (sets,
phases) are reused only when made from the same inputs, and redone under ``--redo align``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omnishift.models.speech_inputs import reading
from omnishift.pipeline.context import Context
from omnishift.reuse import content_sha256

_RECIPE_KEY = {"speech_input": "speech_input", "speech_options": "speech_options", "ctc_decoding": "decoding"}


def _as_override(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"


def _recipe(ctx: Context):
    """The experiment's recipe with the run's folder and base model."""
    from omnishift.align.recipe import RECIPES, load_recipe

    a = ctx.cfg.align
    spec = a.recipe if a.recipe in RECIPES else ctx.cfg.resolve(a.recipe)
    unknown = sorted(set(a.reading or {}) - set(_RECIPE_KEY))
    if unknown:
        raise ValueError(f"align.reading: unknown key(s) {unknown}; use {list(_RECIPE_KEY)}")
    where = a.out_dir or ctx.dir("align")
    reading_overrides = [_as_override(_RECIPE_KEY[k], v) for k, v in (a.reading or {}).items()]
    return load_recipe(spec, list(a.overrides) + reading_overrides + [
        _as_override("out_dir", str(where)), _as_override("model", dataclasses.asdict(ctx.cfg.model))])


def align_inputs(ctx: Context) -> dict:
    """What the align stage reads from outside the run: the recipe YAML, by content."""
    from omnishift.align.recipe import RECIPES, shipped

    a = ctx.cfg.align
    if a.recipe is None:
        return {}
    return {"align.recipe": content_sha256(shipped(a.recipe) if a.recipe in RECIPES else ctx.cfg.resolve(a.recipe))}


def stage_align(ctx: Context, out: Path) -> dict:
    """Run the recipe (sets, phases, ``final/``) with the LLM frozen; decode the run's clips once."""
    from omnishift.align.recipe import run_recipe

    if ctx.cfg.align.recipe is None:
        return {"skipped": "align.recipe is not set (methods start from a fresh adaptor)"}
    cfg, origin = _recipe(ctx)
    final = run_recipe(cfg, origin, progress=ctx.progress.stream is not None, redo=ctx.stage in ctx.redo,
                       final=out / "final")
    record = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
    return {"recipe": origin, "parts": [p.get("set") or p.get("phase") for p in record["parts"]],
            "decoded": decode_run_clips(ctx, final)}


def decode_run_clips(ctx: Context, final: Path) -> dict | None:
    """Beam-decode the run's clips once into ``evaluate.feature_cache/ctc_tokens`` when the aligned
    model reads its CTC path by beam search (:mod:`omnishift.align.decode`); None when there is
    nothing to do. The cache is keyed by content (clip states, adaptor, decoding settings, LLM)."""
    meta = json.loads((final / "omnishift_config.json").read_text(encoding="utf-8"))
    fc = ctx.cfg.evaluate.feature_cache
    if not reading(meta.get("speech_input", "adaptor")).beam or not meta.get("ctc_decoding") or not fc:
        return None
    from omnishift.align.decode import decode_clips

    held = ctx.heldout_manifest()
    return decode_clips(final, ctx.cfg.resolve(fc), [ctx.train_manifest, *ctx.benchmarks().values()],
                        raw=[held] if ctx.cfg.evaluate.listening else [], raw_limit=ctx.cfg.evaluate.listening,
                        workers=ctx.cfg.align.workers, progress=ctx.progress.stream is not None)
