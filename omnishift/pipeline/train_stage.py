"""The ``train`` stage: Stage 1 of every listed method, each a unit ``train/LABEL`` reused only
when its training config, its data, its starting model and the artifacts it reads (eq. 3
coefficients, text scores) are those that made it, by content."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

from omnishift.pipeline.align_stage import _as_override
from omnishift.pipeline.context import Context
from omnishift.reuse import content_sha256
from omnishift.report.names import display


def train_inputs(ctx: Context) -> dict:
    """The training YAMLs the methods (and the rank ablation) read, by content."""
    files = {f"train.methods.{label}.config": spec.config for label, spec in ctx.cfg.train.methods.items()}
    files["ablation.config"] = ctx.cfg.ablation.config
    return {k: content_sha256(ctx.cfg.resolve(p)) for k, p in files.items() if p is not None}


def train_overrides(ctx: Context, method: str | None, extra: list[str]) -> list[str]:
    """The pipeline's own overrides (model, data, method inputs), applied after the user's ``extra``."""
    cfg = ctx.cfg
    o = list(cfg.train.overrides) + list(extra)
    aligned = ctx.aligned()
    model = str(aligned) if aligned is not None else dataclasses.asdict(cfg.model)
    o += [_as_override("model", model), _as_override("data.source", str(ctx.train_manifest)),
          _as_override("data.audio_dir", str(ctx.train_manifest.parent)), "data.limit=null"]
    if method is not None:
        from omnishift.train.methods import METHODS

        for option, artifact in METHODS[method].inputs.items():
            o.append(_as_override(f"method.options.{option}", str(ctx.artifact(artifact, method))))
    return o


def _config_dict(path: str | None, overrides: list[str]) -> dict:
    import yaml

    from omnishift.schema import apply_override

    data = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}) if path else {}
    for o in overrides:
        data = apply_override(data, o)
    return data


def train_config(ctx: Context, label: str):
    """The :class:`TrainConfig` of method ``label``: its YAML, the user's overrides, then the pipeline's."""
    from omnishift.train.config import config_from_dict

    spec = ctx.cfg.train.methods[label]
    path = ctx.cfg.resolve(spec.config)
    pre = [f"method.name={label}"] if spec.config is None else []
    user = pre + list(ctx.cfg.train.overrides) + list(spec.overrides)
    method = (_config_dict(path, user).get("method") or {}).get("name", "full")
    data = _config_dict(path, pre + train_overrides(ctx, method, spec.overrides)
                        + [_as_override("out_dir", str(ctx.dir("train") / label))])
    return config_from_dict(data, f"{path or 'trainer defaults'} (method {label!r} of experiment {ctx.cfg.name!r})")


def _total_steps(tcfg, n_items: int) -> int:
    lp = tcfg.loop
    return lp.max_steps or lp.epochs * math.ceil(math.ceil(n_items / lp.batch_size) / lp.grad_accum)


def _drift_probe(ctx: Context, out: Path):
    """The forgetting-curve probe of this experiment (None: ``train.drift`` is off): drift from the
    model Stage 1 starts from (the aligned folder, or the base models) on held-out instructions and
    on the ``qa`` benchmarks' questions as text; the starting model's answers are computed once per
    set into ``train/drift_base/SET``."""
    d, ev = ctx.cfg.train.drift, ctx.cfg.evaluate
    if not d.every or not (d.source or d.qa):
        return None
    from omnishift.data.manifest import read_manifest
    from omnishift.evaluate.drift import DriftProbe, ProbeSet, base_answers_unit, drift_prompts
    from omnishift.evaluate.qa import build_eval_items
    from omnishift.models.speech_llm import load_speech_llm

    start = ctx.aligned()
    base = load_speech_llm(str(start)) if start is not None else load_speech_llm(
        None, **dataclasses.asdict(ctx.cfg.model))
    redo = ctx.stage in ctx.redo
    sets = []
    if d.source:
        prompts, _ = drift_prompts(ctx.cfg.resolve(d.source), None, d.limit)
        answers = base_answers_unit(base, prompts, out / "drift_base" / "heldout", d.max_new_tokens, redo=redo)
        sets.append(ProbeSet("heldout", prompts, answers, flip=d.flip, max_new_tokens=d.max_new_tokens))
    for name in d.qa:
        items = build_eval_items(read_manifest(ctx.benchmarks()[name]), "t2t", prompt=ev.prompt)
        prompts = [it["prompt"] for it in items]
        answers = base_answers_unit(base, prompts, out / "drift_base" / name, ev.max_new_tokens, redo=redo)
        sets.append(ProbeSet(name, prompts, answers, references=[list(it["references"]) for it in items],
                             max_new_tokens=ev.max_new_tokens))
    return DriftProbe(base, sets, d.every, slots=ev.batch_size)  # answers decoded as the evaluate stage decodes


def stage_train(ctx: Context, out: Path) -> dict:
    """Train every listed method (each resumes from its checkpoints); loss curves of all of them."""
    from omnishift.report.figures import plot_loss_curves
    from omnishift.train.trainer import train, training_inputs

    methods = ctx.cfg.train.methods
    probe = functools.cache(lambda: _drift_probe(ctx, out))  # built on the first method that trains
    n_items = sum(1 for line in ctx.train_manifest.read_text(encoding="utf-8").splitlines() if line.strip())
    info = {}
    for i, label in enumerate(methods, 1):
        if not ctx.mine(i - 1):
            continue
        tcfg = train_config(ctx, label)
        if not ctx.reuse(out / label, training_inputs(tcfg), f"training of {label!r}",
                         lambda d: (d / "final").is_dir() and (d / "summary.json").is_file()):
            total = _total_steps(tcfg, n_items)
            task = f"train {label} ({i}/{len(methods)})"

            def on_step(rec, task=task, total=total):
                ctx.progress.step(task, rec["step"], total, f"loss {rec['loss']:.3f}")

            train(tcfg, resume=True, on_step=on_step, probe=probe())
        info[label] = json.loads((out / label / "summary.json").read_text())
    if methods and ctx.shard is None:
        plot_loss_curves({display(m): out / m for m in methods}, out / "loss.png", window=5)
    return {"methods": info}
