"""The ``data`` stage: training instructions, held-out set and benchmarks as manifests with speech.

It is the only stage that reads outside the run (``../shared/data``, a manifest, the hub), so its
``DONE`` marker records those sources by content (:func:`data_inputs`): an edited benchmark or
instruction file makes the finished stage stale even though the config did not change.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.paths import atomic_write_text
from omnishift.pipeline.context import Context


def source_fp(ctx: Context, spec: str, limit: int | None) -> str:
    """A data source of the experiment by content (:func:`omnishift.data.sources.source_fingerprint`)."""
    from omnishift.data.sources import source_fingerprint

    return source_fingerprint(ctx.cfg.resolve(spec), limit)


def data_inputs(ctx: Context) -> dict:
    """What the data stage reads from outside the run, by content (one entry per source)."""
    d = ctx.cfg.data
    out = {"data.train": source_fp(ctx, d.train, d.train_limit)}
    if d.heldout:
        out["data.heldout"] = source_fp(ctx, d.heldout, d.heldout_limit)
    for name, b in ctx.cfg.evaluate.benchmarks.items():
        out[f"evaluate.benchmarks.{name}"] = source_fp(ctx, b.source, b.limit)
    return out


def stage_data(ctx: Context, out: Path) -> dict:
    """Training instructions, held-out set and benchmarks as manifests with (synthesized) audio."""
    from omnishift.data.manifest import write_manifest
    from omnishift.data.sources import load_source
    from omnishift.data.synth import SynthConfig, ensure_audio
    from omnishift.evaluate.qa import select_subset

    from omnishift.data.voices import SpeakerMix

    cfg, synth = ctx.cfg, SynthConfig(voice=ctx.cfg.data.voice, rate=ctx.cfg.data.rate)
    speakers = SpeakerMix(cfg.data.engines, cfg.data.speaker_seed) if cfg.data.engines else synth
    info = {}
    sets = [("train", cfg.data.train, cfg.data.train_limit)]
    if cfg.data.heldout:
        sets.append(("heldout", cfg.data.heldout, cfg.data.heldout_limit))
    for i, (name, spec, limit) in enumerate(sets, 1):
        rows = load_source(cfg.resolve(spec), limit=limit)
        examples = [e for e in rows if e.response and e.response.strip()]
        if not examples:
            raise ValueError(f"data.{name}: {spec!r} has no examples with a response to train or score on")
        examples, dropped = ensure_audio(examples, out / name, speakers, drop_too_long=True)
        write_manifest(out / name / "manifest.jsonl", examples)
        info[name] = {"source": spec, "items": len(examples), "dropped_over_30s": dropped,
                      "skipped_no_response": len(rows) - len(examples) - dropped}
        ctx.progress.step("instructions", i, len(sets), name)
    need_audio = "s2t" in cfg.evaluate.modes
    benches = cfg.evaluate.benchmarks
    for i, (name, b) in enumerate(benches.items(), 1):
        examples = select_subset(load_source(cfg.resolve(b.source), limit=b.limit), b.subset, b.seed)
        missing = [e.id for e in examples if not e.answers]
        if missing:
            raise ValueError(f"evaluate.benchmarks.{name}: items {missing[:3]} have no reference answers")
        dropped = 0
        if need_audio:
            examples, dropped = ensure_audio(examples, out / "bench" / name, synth, drop_too_long=True)
        write_manifest(out / "bench" / f"{name}.jsonl", examples)
        info[f"bench:{name}"] = {"source": b.source, "items": len(examples), "dropped_over_30s": dropped}
        ctx.progress.step("benchmarks", i, len(benches), name)
    atomic_write_text(out / "summary.json", json.dumps(info, indent=2) + "\n")
    return {"sets": info}
