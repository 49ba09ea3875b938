"""The stages of ``omnishift run``, each a function ``(ctx, out_dir) -> info dict``.

Every stage is idempotent: units already complete on disk are reused (a score folder with its
``modules.csv``, a training run with ``final/``, an evaluation whose summary covers all items),
and an interrupted unit resumes through its own mechanism (importance ``state/``, training
checkpoints, evaluation ``items.jsonl``). Later stages read earlier stages' folders only, so a
run needs ``../shared`` (or the network) at most in the ``data`` stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Callable, NamedTuple

from omnishift.paths import atomic_write_text
from omnishift.pipeline.claims import claimed
from omnishift.report.names import display
from omnishift.runs import read_marker

log = logging.getLogger(__name__)

class Context:
    """What stages share: the config, the run folder, progress, and the base model (loaded once).

    Args:
        cfg, run_dir, progress: the experiment, its folder and its :class:`Progress`.
        shard: ``(i, n)``: this process runs only units ``u`` with ``u % n == i`` of a stage with
            independent units (train, evaluate), so n processes (single-threaded each, or on n
            machines sharing the folder) split the stage; None: every unit.
    """

    def __init__(self, cfg, run_dir: Path, progress, shard: tuple[int, int] | None = None):
        self.cfg, self.run_dir, self.progress, self.shard = cfg, Path(run_dir), progress, shard
        self._base = None

    def mine(self, unit: int) -> bool:
        """Whether unit ``unit`` (0-based, in the stage's fixed order) belongs to this process."""
        return self.shard is None or unit % self.shard[1] == self.shard[0]

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def require(self, stage: str, what: str) -> Path:
        """The folder of a finished ``stage`` (raises naming the stage to run first)."""
        if read_marker(self.run_dir, stage) is None:
            raise ValueError(f"{what} needs the outputs of stage {stage!r}, which has not finished in "
                               f"{self.run_dir}: add it to `stages` (or drop `stages` to run everything)")
        return self.dir(stage)

    def base_model(self):
        if self._base is None:
            from omnishift.models.speech_llm import SpeechLLM

            self._base = SpeechLLM.from_config(self.cfg.model)
        return self._base

    @property
    def train_manifest(self) -> Path:
        return self.require("data", "this stage") / "train" / "manifest.jsonl"

    def heldout_manifest(self) -> Path:
        d = self.require("data", "deactivation") / "heldout" / "manifest.jsonl"
        return d if d.is_file() else self.train_manifest

    def benchmarks(self) -> dict[str, Path]:
        d = self.require("data", "evaluation") / "bench"
        return {name: d / f"{name}.jsonl" for name in self.cfg.evaluate.benchmarks}

    def text_scores(self, what: str) -> Path:
        d = self.require("importance", what) / "base" / "text"
        if not (d / "modules.csv").is_file():
            raise ValueError(f"{what} needs TEXT importance of the base model: add 'text' to importance.modalities")
        return d

    def artifact(self, kind: str, what: str) -> Path:
        """An input a training method's record asks for (:attr:`omnishift.train.methods.Method.inputs`),
        made by an earlier stage; ``what`` names the consumer in errors."""
        if kind == "layer_lr_coefficients":
            return self.require("importance", what) / "layer_lr.json"
        if kind == "text_scores":
            return self.text_scores(what)
        raise ValueError(f"{what} asks for pipeline input {kind!r}; known: layer_lr_coefficients, text_scores")

    def method_name(self, label: str) -> str:
        import yaml

        cfg = yaml.safe_load((self.dir("train") / label / "config.yaml").read_text(encoding="utf-8"))
        return cfg["method"]["name"]

    def trained(self, label: str) -> bool:
        """Whether method ``label`` has finished training (``final/`` is written in one rename)."""
        return (self.dir("train") / label / "final").is_dir()

    def aligned(self) -> Path | None:
        """The aligned speech LLM of the ``align`` stage, or None when alignment is off."""
        if self.cfg.align.config is None and self.cfg.align.model is None:
            return None
        f = self.require("align", "training from the aligned adaptor") / "run" / "final"
        if not f.is_dir():
            raise ValueError(f"{f} missing: stage align did not finish; run it again")
        return f

    def final(self, label: str) -> Path:
        f = self.dir("train") / label / "final"
        if f.is_dir():  # a finished method is usable while other methods still train (sharded runs)
            return f
        self.require("train", f"model {label!r}")
        raise ValueError(f"{f} missing: stage train did not finish method {label!r}")


# ---- data ------------------------------------------------------------------------------------
def stage_data(ctx: Context, out: Path) -> dict:
    """Training instructions, held-out set and benchmarks as manifests with (synthesized) audio."""
    from omnishift.data.manifest import write_manifest
    from omnishift.data.sources import load_source
    from omnishift.data.synth import SynthConfig, ensure_audio
    from omnishift.evaluate.qa import select_subset

    cfg, synth = ctx.cfg, SynthConfig(voice=ctx.cfg.data.voice, rate=ctx.cfg.data.rate)
    info = {}
    sets = [("train", cfg.data.train, cfg.data.train_limit)]
    if cfg.data.heldout:
        sets.append(("heldout", cfg.data.heldout, cfg.data.heldout_limit))
    for i, (name, spec, limit) in enumerate(sets, 1):
        examples = [e for e in load_source(cfg.resolve(spec), limit=limit) if e.response]
        if not examples:
            raise ValueError(f"data.{name}: {spec!r} has no examples with a response to train or score on")
        examples, dropped = ensure_audio(examples, out / name, synth, drop_too_long=True)
        write_manifest(out / name / "manifest.jsonl", examples)
        info[name] = {"source": spec, "items": len(examples), "dropped_over_30s": dropped}
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


# ---- importance ------------------------------------------------------------------------------
def _score(ctx: Context, model, modality: str, out: Path, meta: dict) -> Path:
    """One importance pass on the training manifest (reused when ``out`` holds one from the same
    model, items and settings; refused when it holds one from others)."""
    from omnishift.data.items import build_items
    from omnishift.importance.estimator import ImportanceConfig, compute_importance

    imp = ctx.cfg.importance
    items, info = build_items(str(ctx.train_manifest), modality, limit=imp.limit,
                              max_response_tokens=imp.max_response_tokens, tokenizer=model.tokenizer)
    cfg = ImportanceConfig(mode=imp.mode, modality=modality, fraction=imp.fraction, batch_size=imp.batch_size,
                           seed=imp.seed)
    return compute_importance(model, items, cfg, out, extra_meta={**meta, "data": info})


def stage_importance(ctx: Context, out: Path) -> dict:
    """Base-model importance per modality, eq. 3 coefficients, Fig. 1 (rank clustering)."""
    from omnishift.importance.clustering import plot_rank_clustering
    from omnishift.importance.shift import write_layer_lr

    imp, model = ctx.cfg.importance, ctx.base_model()
    dirs = {}
    for i, modality in enumerate(imp.modalities, 1):
        dirs[modality] = _score(ctx, model, modality, out / "base" / modality, {"model": "base"})
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
    from omnishift.data.items import build_items
    from omnishift.importance.deactivate import deactivation_table, write_table

    d, model = ctx.cfg.deactivation, ctx.base_model()
    if not d.enabled:
        return {"skipped": "deactivation.enabled is false"}
    scores = ctx.text_scores("deactivation")
    src = str(ctx.heldout_manifest())
    sets = {m: build_items(src, m, limit=d.limit, max_response_tokens=d.max_response_tokens,
                                 tokenizer=model.tokenizer)[0] for m in ("text", "speech")}
    rows = deactivation_table(model, scores, sets, fraction=d.fraction, scope=d.scope, batch_size=d.batch_size,
                              progress=ctx.progress.stream is not None)
    write_table(rows, out, d.fraction, label=Path(str(ctx.cfg.model.llm)).name)
    atomic_write_text(out / "rows.json", json.dumps({"fraction": d.fraction, "scope": d.scope, "model":
                                                     Path(str(ctx.cfg.model.llm)).name, "rows": rows}, indent=2) + "\n")
    return {"rows": len(rows)}


# ---- alignment -------------------------------------------------------------------------------
def stage_align(ctx: Context, out: Path) -> dict:
    """Build (or reuse) the alignment set and align the adaptor with the LLM frozen (:mod:`omnishift.align`)."""
    from omnishift.align.config import load_align_config
    from omnishift.align.dataset import build_alignment_set
    from omnishift.align.trainer import align

    a = ctx.cfg.align
    if a.model is not None:
        info = adopt_aligned(ctx, Path(ctx.cfg.resolve(a.model)), out / "run")
        return {**info, "decoded": decode_run_clips(ctx, out / "run" / "final")}
    if a.config is None:
        return {"skipped": "align.config is not set (methods start from a fresh adaptor)"}
    fp = ctx.base_model().processor.frame_policy
    set_dir = Path(ctx.cfg.resolve(a.set)) if a.set else out / "set"
    if a.set is None or not (set_dir / "summary.json").is_file():  # build (or finish) it; a finished set is used as is
        texts = None
        if a.texts:
            from omnishift.data.sources import load_source

            texts = [(e.id, e.text) for e in load_source(ctx.cfg.resolve(a.texts))]
        build_alignment_set(set_dir, a.n, encoder=ctx.cfg.model.encoder, seed=a.seed, workers=a.workers, texts=texts,
                            policy={"policy": fp.policy, "k": fp.k, "margin_s": fp.margin_s, "max_frames": fp.max_frames},
                            progress=ctx.progress.stream is not None)
    overrides = list(a.overrides) + [_as_override("model", dataclasses.asdict(ctx.cfg.model)),
                                     _as_override("data.set", str(set_dir)), _as_override("out_dir", str(out / "run")),
                                     "loop.progress=false"]
    acfg = load_align_config(ctx.cfg.resolve(a.config), overrides)

    def on_step(rec):
        ctx.progress.step("align", rec["step"], acfg.loop.max_steps, f"loss {rec['loss']:.3f}")

    align(acfg, model=None, resume=True, on_step=on_step)
    return {**json.loads((out / "run" / "summary.json").read_text()), "decoded": decode_run_clips(ctx, out / "run" / "final")}


def decode_run_clips(ctx: Context, final: Path) -> dict | None:
    """Beam-decode the run's clips once into ``evaluate.feature_cache/ctc_tokens`` when the model
    reads its CTC path by beam search (:mod:`omnishift.align.decode`); None when there is nothing to do."""
    m, fc = ctx.cfg.model, ctx.cfg.evaluate.feature_cache
    if m.speech_input != "ctc_top1" or not m.ctc_decoding or not fc:
        return None
    from omnishift.align.decode import decode_clips

    held = ctx.heldout_manifest()
    return decode_clips(final, ctx.cfg.resolve(fc), [ctx.train_manifest, *ctx.benchmarks().values()],
                        raw=[held] if ctx.cfg.evaluate.listening else [], raw_limit=ctx.cfg.evaluate.listening,
                        workers=ctx.cfg.align.workers, progress=ctx.progress.stream is not None)


# the fields that decide the adaptor's shape and what it was trained on; the rest is how it is read
_ARCHITECTURE = ("llm", "encoder", "k", "adaptor_hidden", "frame_policy", "trim_margin_s", "adaptor_norm", "ctc_head",
                 "adaptor_layers")


def adopt_aligned(ctx: Context, src: Path, run: Path) -> dict:
    """Copy an aligned folder made outside the run into ``run/final``, read as the experiment says.

    Why a copy and not a link: the run's models then record, and its reruns check, exactly the
    adaptor Stage 1 started from (its hash is in ``summary.json``), even if ``src`` is retrained.
    """
    from omnishift.fingerprint import weights_sha256
    from omnishift.models.speech_llm import SpeechLLM

    want = dataclasses.asdict(ctx.cfg.model)
    model = SpeechLLM.from_pretrained(src, speech_input=want["speech_input"], ctc_decoding=want["ctc_decoding"])
    model.config.ctc_decoding = want["ctc_decoding"]  # None (greedy) too, whatever the folder says
    have = dataclasses.asdict(model.config)
    diff = {k: (have[k], want[k]) for k in _ARCHITECTURE if have[k] != want[k]}
    if diff:
        raise ValueError(f"align.model {src}: its architecture differs from the experiment's model section "
                         f"{ {k: f'{a!r} there, {b!r} here' for k, (a, b) in diff.items()} }; make model match the folder")
    sha = weights_sha256(model.adaptor)
    summary = run / "summary.json"
    if summary.is_file():
        done = json.loads(summary.read_text())
        if done.get("adaptor_sha256") != sha or done.get("model") != have:
            raise ValueError(f"{run} holds adaptor {done.get('adaptor_sha256', '?')[:12]} adopted earlier, and {src} "
                             f"now holds {sha[:12]} (or is read with another model config): this run's Stage 1 and "
                             "evaluation started from the old one; give the run a new name (name=...) to start "
                             "from the new adaptor")
        return done
    model.save_pretrained(run / "final", llm_is_base=True)
    info = {"adopted_from": str(src), "adaptor_sha256": sha, "model": have}
    atomic_write_text(summary, json.dumps(info, indent=2) + "\n")
    return info


# ---- training --------------------------------------------------------------------------------
def _as_override(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"


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


def stage_train(ctx: Context, out: Path) -> dict:
    """Train every listed method (each resumes from its checkpoints); loss curves of all of them."""
    from omnishift.report.figures import plot_loss_curves
    from omnishift.train.trainer import train

    methods = ctx.cfg.train.methods
    n_items = sum(1 for line in ctx.train_manifest.read_text(encoding="utf-8").splitlines() if line.strip())
    info = {}
    for i, label in enumerate(methods, 1):
        if not ctx.mine(i - 1):
            continue
        tcfg = train_config(ctx, label)
        total = _total_steps(tcfg, n_items)
        task = f"train {label} ({i}/{len(methods)})"

        def on_step(rec, task=task, total=total):
            ctx.progress.step(task, rec["step"], total, f"loss {rec['loss']:.3f}")

        train(tcfg, resume=True, on_step=on_step)
        info[label] = json.loads((out / label / "summary.json").read_text())
    if methods and ctx.shard is None:
        plot_loss_curves({display(m): out / m for m in methods}, out / "loss.png", window=5)
    return {"methods": info}


# ---- after training --------------------------------------------------------------------------
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
        if not (out / label / "modules.csv").is_file():
            _score(ctx, load_trained(ctx.final(label)), "text", out / label, {"model": label})
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
    from omnishift.train.methods import METHODS
    from omnishift.models.defaults import load_llm

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
    scores = {lab: {n: rank_clustering_score(top_region(d, ctx.cfg.importance.cluster_fraction))["score"] for n, d in per.items()}
              for lab, per in deltas.items()}
    atomic_write_text(out / "clustering.json", json.dumps(scores, indent=2) + "\n")
    return {"methods": list(deltas)}


# ---- evaluation ------------------------------------------------------------------------------
def same_llm(a, b) -> bool:
    """Whether two LLMs hold bit-identical weights under the same parameter names."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def copy_unit(src: Path, dst: Path, meta: dict) -> None:
    """Give ``dst`` the answers and summary of the finished unit ``src`` (``meta`` says why)."""
    summary = json.loads((src / "summary.json").read_text(encoding="utf-8"))
    dst.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dst / "items.jsonl", (src / "items.jsonl").read_text(encoding="utf-8"))
    summary.update(meta, seconds=0.0, questions_per_s=None)
    atomic_write_text(dst / "summary.json", json.dumps(summary, indent=2) + "\n")


def _say_wait(ctx: Context, unit: str, holder: dict | None) -> None:
    if ctx.progress.stream is not None:
        print(f"evaluate: waiting for {unit}, which process {(holder or {}).get('pid')} on "
              f"{(holder or {}).get('host')} is evaluating", file=ctx.progress.stream, flush=True)


def stage_evaluate(ctx: Context, out: Path) -> dict:
    """T2T / S2T accuracy of No-FT, the cascade and every method on every benchmark.

    A method whose LLM is still the base model bit for bit (``frozen``: only the adaptor
    trains) answers text questions exactly as No-FT does, since T2T never touches the adaptor;
    once that is checked on the weights, its T2T units are copied from No-FT's instead of
    generated again (the summary names the source).
    """
    from omnishift.data.manifest import read_manifest
    from omnishift.evaluate.qa import build_eval_items, evaluate, finished_summary

    ev = ctx.cfg.evaluate
    benches = {name: read_manifest(p) for name, p in ctx.benchmarks().items()}
    rows = []  # (row key, model source, modes)
    if "no_ft" in ev.baselines and "t2t" in ev.modes:
        rows.append(("no_ft", "base", ["t2t"]))
    if "cascade" in ev.baselines and "s2t" in ev.modes:
        rows.append(("cascade", "cascade", ["s2t"]))
    if ctx.aligned() is not None:
        rows.append(("aligned", "trained", list(ev.modes)))
    rows += [(label, "trained", list(ev.modes)) for label in ctx.cfg.train.methods]
    units = [(r, src, b, m) for r, src, modes in rows for b in benches for m in modes]
    models, asr, unchanged, waiting, busy = {}, None, {}, [], []

    def trained_model(row: str):
        if row not in models:
            models.clear()  # one trained model in memory at a time
            models[row] = load_trained(ctx.aligned() if row == "aligned" else ctx.final(row))
            if ev.feature_cache:  # beam-decoded CTC input: one decoding per clip for every row
                models[row].use_token_cache(Path(ctx.cfg.resolve(ev.feature_cache)) / "ctc_tokens")
        return models[row]

    for i, (row, src, bench, mode) in enumerate(units, 1):
        if not ctx.mine(i - 1):
            continue
        if src == "trained" and row != "aligned" and ctx.shard is not None and not ctx.trained(row):
            waiting.append(f"{row} {bench} {mode}")  # its model is still training in another process
            continue
        folder, exs = out / row / bench / mode, benches[bench]
        meta = {"model": display(row), "row": row, "benchmark": bench, "source": ctx.cfg.evaluate.benchmarks[bench].source,
                "mode": mode, "prompt": ev.prompt}
        unit = f"{row} {bench} {mode}"
        with claimed(folder, wait=ctx.shard is None, on_wait=lambda h, u=unit: _say_wait(ctx, u, h)) as mine:
            if not mine:
                busy.append(unit)  # another live process is evaluating it
                continue
            base_unit = out / "no_ft" / bench / "t2t"
            if (src == "trained" and mode == "t2t" and finished_summary(folder, len(exs)) is None
                    and finished_summary(base_unit, len(exs)) is not None):
                if row not in unchanged:
                    unchanged[row] = same_llm(trained_model(row).llm, ctx.base_model().llm)
                if unchanged[row]:
                    copy_unit(base_unit, folder, {**meta, "label": f"{row} {bench} {mode}", "copied_from": "no_ft",
                                                  "why": "the LLM is the base model bit for bit; T2T does not use the adaptor"})
            if finished_summary(folder, len(exs)) is None:
                model = ctx.base_model() if src in ("base", "cascade") else trained_model(row)
                if src == "cascade":
                    from omnishift.evaluate.cascade import WhisperASR, evaluate_cascade

                    asr = asr or WhisperASR(ev.asr_model)
                    evaluate_cascade(model, asr, exs, folder, eval_settings(ctx), meta=meta)
                else:
                    evaluate(model, build_eval_items(exs, mode, prompt=ev.prompt), folder, eval_settings(ctx),
                             label=f"{row} {bench} {mode}", meta=meta)
        if src == "trained" and mode == "s2t" and not (out / row / bench / "ctc" / "summary.json").is_file():
            model = trained_model(row)
            if model.config.ctc_head:  # what the adaptor hears: its CTC transcript of each question
                from omnishift.align.commands import eval_ctc

                eval_ctc(model, exs, out / row / bench / "ctc",
                         feature_cache=ctx.cfg.resolve(ev.feature_cache) if ev.feature_cache else None)
        ctx.progress.step("evaluate", i, len(units), f"{row} {bench} {mode}")
    if (waiting or busy) and ctx.progress.stream is not None:
        print(f"evaluate: this shard skipped {len(waiting)} unit(s) whose model is not trained yet {waiting} and "
              f"{len(busy)} another process holds {busy}; run the shard again later", file=ctx.progress.stream, flush=True)
    if ev.listening and ctx.shard is None:
        from omnishift.data.items import build_items
        from omnishift.evaluate.listening import listening_check

        speech_rows = [r for r, src, modes in rows if src == "trained" and "s2t" in modes]
        for i, row in enumerate(speech_rows, 1):
            f = out / row / "listening.json"
            if not f.is_file():
                model = trained_model(row)
                src = str(ctx.heldout_manifest())
                text, _ = build_items(src, "text", limit=ev.listening, max_response_tokens=64, tokenizer=model.tokenizer)
                speech, _ = build_items(src, "speech", limit=ev.listening, max_response_tokens=64, tokenizer=model.tokenizer)
                atomic_write_text(f, json.dumps({"row": row, "data": src, **listening_check(model, text, speech)},
                                                indent=2) + "\n")
            ctx.progress.step("listening", i, len(speech_rows), row)
    return {"evaluations": len(units), "skipped_untrained": waiting, "skipped_busy": busy}


def eval_settings(ctx: Context):
    """The experiment's evaluation settings (the same for every row, benchmark and rank)."""
    from omnishift.evaluate.qa import EvalSettings

    ev = ctx.cfg.evaluate
    return EvalSettings(prompt=ev.prompt, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens,
                        progress=ctx.progress.stream is not None, feature_cache=ctx.cfg.resolve(ev.feature_cache))


def stage_ablation(ctx: Context, out: Path) -> dict:
    """Table 3: LoRA at each rank, trained and evaluated (:func:`omnishift.evaluate.ablation.ablate_rank`)."""
    from omnishift.evaluate.ablation import ablate_rank

    ab, ev = ctx.cfg.ablation, ctx.cfg.evaluate
    if not ab.ranks:
        return {"skipped": "ablation.ranks is empty"}
    methods = ctx.cfg.train.methods
    config = ab.config
    if config is None and methods:
        label = next((m for m in methods if m == "lora"), next(iter(methods)))
        config = methods[label].config
    config = ctx.cfg.resolve(config)
    base_method = (_config_dict(config, []).get("method") or {}).get("name", "full")
    overrides = train_overrides(ctx, None, ab.overrides)
    if base_method != "lora":
        overrides.append("method.options={}")  # the other method's options do not apply to LoRA
    names = ab.benchmarks or list(ev.benchmarks)
    benches = ctx.benchmarks()
    ablate_rank(config, [int(r) for r in ab.ranks], [str(benches[n]) for n in names], out, overrides=overrides,
                modes=list(ev.modes), settings=eval_settings(ctx))
    return {"ranks": list(ab.ranks)}


def stage_report(ctx: Context, out: Path) -> dict:
    from omnishift.report.build import build_report

    html = build_report(ctx.run_dir, title=ctx.cfg.report.title)
    return {"report": str(html)}


class Stage(NamedTuple):
    """A pipeline stage. ``run(ctx, out) -> info`` does it (``info`` goes into its ``DONE`` marker);
    ``shardable``: its units are independent, so ``--stage S --shard i/n`` may split them across
    processes; ``produces``: what it makes, as the report's overview lists it.

    ``reads``: the experiment-config keys (dotted: ``evaluate.benchmarks``) its outputs depend on,
    None for all of them; ``after``: the stages whose outputs it uses. A finished stage is stale
    when any key it or (transitively) its inputs read has changed (:func:`stage_keys`), so changing
    ``evaluate.batch_size`` re-runs evaluation, never training.
    """

    run: Callable[[Context, Path], dict | None]
    shardable: bool
    produces: str
    reads: tuple[str, ...] | None = None
    after: tuple[str, ...] = ()


#: The stages in run order: the one place a stage's facts live (adding one: a function + a line).
STAGES: dict[str, Stage] = {
    "data": Stage(stage_data, False, "training instructions, held-out set and benchmarks with synthesized speech",
                  ("data", "evaluate.benchmarks", "evaluate.modes")),
    "importance": Stage(stage_importance, False,
                        "Taylor importance of the base model (text and speech input), eq. 3, Fig. 1",
                        ("model", "importance"), ("data",)),
    "deactivation": Stage(stage_deactivation, False, "Table 1", ("model", "deactivation"), ("data", "importance")),
    "align": Stage(stage_align, False, "adaptor alignment (CTC / KD, LLM frozen) before Stage 1", ("model", "align")),
    "train": Stage(stage_train, True, "Stage-1 training of every method", ("model", "train"),
                   ("data", "importance", "align")),
    "importance_after": Stage(stage_importance_after, True, "textual importance of every trained model",
                              ("importance",), ("train",)),
    "shift": Stage(stage_shift, False, "Fig. 2-3 and shift metrics", ("importance",), ("importance", "importance_after")),
    "change": Stage(stage_change, False, "Fig. 4", ("importance",), ("importance", "train")),
    "evaluate": Stage(stage_evaluate, True, "Table 2 (T2T / S2T with No-FT and cascade baselines)", ("evaluate",),
                      ("data", "align", "train")),
    "ablation": Stage(stage_ablation, False, "Table 3 (LoRA rank)", ("ablation", "evaluate"),
                      ("data", "importance", "align", "train")),
    "report": Stage(stage_report, False, "this report"),
}


def stage_keys(name: str) -> set[str] | None:
    """The config keys stage ``name``'s outputs depend on: its own ``reads`` and those of every
    stage it uses, transitively (None: the whole config)."""
    st = STAGES[name]
    if st.reads is None:
        return None
    keys = set(st.reads)
    for dep in st.after:
        more = stage_keys(dep)
        if more is None:
            return None
        keys |= more
    return keys
