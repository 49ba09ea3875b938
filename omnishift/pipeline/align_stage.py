"""The ``align`` stage: align the adaptor with the LLM frozen before Stage 1 (:mod:`omnishift.align`),
or adopt a folder aligned outside the run. Its units (the run's alignment set, the aligned run or
the adopted copy) are reused only when made from the same inputs, by content."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omnishift.paths import atomic_write_text
from omnishift.pipeline.context import Context
from omnishift.pipeline.data_stage import source_fp
from omnishift.reuse import content_sha256

# the fields that decide the adaptor's shape and what it was trained on; the rest is how it is read
_ARCHITECTURE = ("llm", "encoder", "k", "adaptor_hidden", "frame_policy", "trim_margin_s", "adaptor_norm", "ctc_head",
                 "adaptor_layers")


def _as_override(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"


def align_inputs(ctx: Context) -> dict:
    """What the align stage reads from outside the run, by content."""
    a, out = ctx.cfg.align, {}
    if a.config is not None:
        out["align.config"] = content_sha256(ctx.cfg.resolve(a.config))
    if a.model is not None:
        out["align.model"] = ctx.model_fp(Path(ctx.cfg.resolve(a.model)))
    if a.texts is not None:
        out["align.texts"] = source_fp(ctx, a.texts, None)
    if a.set is not None:
        meta = Path(ctx.cfg.resolve(a.set)) / "meta.json"
        out["align.set"] = content_sha256(meta) if meta.is_file() else "not built yet"
    return out


def _build_set(ctx: Context, set_dir: Path, own: bool) -> None:
    """The alignment set: the run's own (a unit) or ``align.set`` (checked by its own ``meta.json``)."""
    from omnishift.align.dataset import build_alignment_set
    from omnishift.models.identity import part_fingerprint

    a, fp = ctx.cfg.align, ctx.base_model().processor.frame_policy
    policy = {"policy": fp.policy, "k": fp.k, "margin_s": fp.margin_s, "max_frames": fp.max_frames}
    inputs = {"n": a.n, "seed": a.seed, "policy": policy, "encoder": part_fingerprint(ctx.cfg.model.encoder),
              "texts": source_fp(ctx, a.texts, None) if a.texts else "shared question and instruction texts"}
    if own and ctx.reuse(set_dir, inputs, "alignment set", lambda d: (d / "summary.json").is_file()):
        return
    texts = None
    if a.texts:
        from omnishift.data.sources import load_source

        texts = [(e.id, e.text) for e in load_source(ctx.cfg.resolve(a.texts))]
    build_alignment_set(set_dir, a.n, encoder=ctx.cfg.model.encoder, seed=a.seed, workers=a.workers, texts=texts,
                        policy=policy, progress=ctx.progress.stream is not None)


def stage_align(ctx: Context, out: Path) -> dict:
    """Build the alignment set and align the adaptor with the LLM frozen, or adopt ``align.model``."""
    from omnishift.align.config import load_align_config
    from omnishift.align.trainer import align, alignment_inputs

    a = ctx.cfg.align
    if a.model is not None:
        info = adopt_aligned(ctx, Path(ctx.cfg.resolve(a.model)), out / "run")
        return {**info, "decoded": decode_run_clips(ctx, out / "run" / "final")}
    if a.config is None:
        return {"skipped": "align.config is not set (methods start from a fresh adaptor)"}
    set_dir = Path(ctx.cfg.resolve(a.set)) if a.set else out / "set"
    _build_set(ctx, set_dir, own=a.set is None)
    overrides = list(a.overrides) + [_as_override("model", dataclasses.asdict(ctx.cfg.model)),
                                     _as_override("data.set", str(set_dir)), _as_override("out_dir", str(out / "run")),
                                     "loop.progress=false"]
    acfg = load_align_config(ctx.cfg.resolve(a.config), overrides)
    if not ctx.reuse(out / "run", alignment_inputs(acfg), "alignment run", lambda d: (d / "final").is_dir()):
        def on_step(rec):
            ctx.progress.step("align", rec["step"], acfg.loop.max_steps, f"loss {rec['loss']:.3f}")

        align(acfg, model=None, resume=True, on_step=on_step)
    return {**json.loads((out / "run" / "summary.json").read_text()), "decoded": decode_run_clips(ctx, out / "run" / "final")}


def decode_run_clips(ctx: Context, final: Path) -> dict | None:
    """Beam-decode the run's clips once into ``evaluate.feature_cache/ctc_tokens`` when the model
    reads its CTC path by beam search (:mod:`omnishift.align.decode`); None when there is nothing to do.
    The cache is keyed by content (clip states, adaptor, decoding settings, LLM), so it is never stale."""
    m, fc = ctx.cfg.model, ctx.cfg.evaluate.feature_cache
    if m.speech_input != "ctc_top1" or not m.ctc_decoding or not fc:
        return None
    from omnishift.align.decode import decode_clips

    held = ctx.heldout_manifest()
    return decode_clips(final, ctx.cfg.resolve(fc), [ctx.train_manifest, *ctx.benchmarks().values()],
                        raw=[held] if ctx.cfg.evaluate.listening else [], raw_limit=ctx.cfg.evaluate.listening,
                        workers=ctx.cfg.align.workers, progress=ctx.progress.stream is not None)


def adopt_aligned(ctx: Context, src: Path, run: Path) -> dict:
    """Copy an aligned folder made outside the run into ``run/final``, read as the experiment says.

    Why a copy and not a link: the run's models then record, and its reruns check, exactly the
    adaptor Stage 1 started from (its hash is in ``summary.json``); a retrained ``src`` makes the
    finished stage stale (its content is one of the stage's inputs).
    """
    from omnishift.fingerprint import weights_sha256
    from omnishift.models.speech_llm import SpeechLLM

    want = dataclasses.asdict(ctx.cfg.model)
    inputs = {"source": ctx.model_fp(src), "model": want}
    if ctx.reuse(run, inputs, "adopted aligned model", lambda d: (d / "final").is_dir() and (d / "summary.json").is_file()):
        return json.loads((run / "summary.json").read_text())
    model = SpeechLLM.from_pretrained(src, speech_input=want["speech_input"], ctc_decoding=want["ctc_decoding"])
    model.config.ctc_decoding = want["ctc_decoding"]  # None (greedy) too, whatever the folder says
    have = dataclasses.asdict(model.config)
    diff = {k: (have[k], want[k]) for k in _ARCHITECTURE if have[k] != want[k]}
    if diff:
        raise ValueError(f"align.model {src}: its architecture differs from the experiment's model section "
                         f"{ {k: f'{a!r} there, {b!r} here' for k, (a, b) in diff.items()} }; make model match the folder")
    model.save_pretrained(run / "final", llm_is_base=True)
    info = {"adopted_from": str(src), "adaptor_sha256": weights_sha256(model.adaptor), "model": have}
    atomic_write_text(run / "summary.json", json.dumps(info, indent=2) + "\n")
    return info
