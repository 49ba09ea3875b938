"""Named alignment recipes: the data sets, training phases, precision and decoding that make an
adaptor listen, run by one command (``omnishift align NAME``) into one folder.

A recipe YAML holds what used to be spread over shell scripts: the synthetic sets to build (engines,
texts, silences, clip count, seed), the phases that train the adaptor on them with the LLM frozen
(each an ``omnishift align`` run, a later phase starting from the earlier one's adaptor), the
precision (``auto``: bfloat16 where the CPU has native bfloat16 products, float32 elsewhere), and the
decoding settings the result was validated with. Those settings are written into the final folder
(``omnishift_config.json``: ``ctc_decoding``, ``speech_input``), so that every command that loads
it reads the speech as the recipe measured, without ``--ctc-*`` flags.

Layout of ``out_dir``: ``sets/NAME/`` (alignment sets), ``phases/NAME/`` (alignment runs),
``final/`` (the model), ``recipe.json`` (what ran, how long each part took). Every part resumes
(a set by its shards, a phase by its checkpoints) and is reused only when made from the same
inputs (:func:`omnishift.reuse.reuse_unit`), so a killed recipe continues with the same command.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from omnishift.models.speech_llm import SPEECH_INPUTS, SpeechLLMConfig
from omnishift.paths import atomic_write_text
from omnishift.schema import AT_LEAST_1, NON_NEGATIVE, ConfigError, build, read_yaml, require

#: Objective options a recipe's ``precision`` sets (where the objective has them).
BF16_OPTIONS = ("bf16_adaptor", "bf16_logits", "bf16_llm")

#: Shipped recipes: name -> YAML under ``omnishift/configs/recipes``. Adding one: a YAML and a line.
RECIPES = {"cpu_listen": "recipes/cpu_listen.yaml"}
PRECISIONS = ("auto", "bf16", "float32")
# seconds a part is expected to take when the recipe records no measured minutes (2 cores)
_CLIP_S, _STEP_S = 0.06, 1.2


@dataclass
class SetSpec:
    """One synthetic alignment set (:func:`omnishift.align.dataset.build_alignment_set`).

    Args:
        name: its folder under ``out_dir/sets``.
        n, seed: clips and seed.
        engines: synthesizers and weights (``espeak=3,pico=1``; pico and piper need their extras).
        texts: parts of the shared texts spoken (``questions``, ``questions+responses``).
        source: a data source to speak instead of the shared texts (``builtin:...``, a manifest).
        lead_silence, trail_silence: up to this many seconds of silence before / after each clip.
        minutes: its measured build time on 2 cores (the ETA and ``omnishift align ls``).
    """

    name: str
    n: int
    seed: int = 0
    engines: str = "espeak"
    texts: str = "questions"
    source: str | None = None
    lead_silence: float = 0.0
    trail_silence: float = 0.0
    minutes: float | None = None


@dataclass
class PhaseSpec:
    """One alignment run over every set: the ``objectives``, ``optim``, ``loop``, ``data`` (limit,
    heldout), ``checkpoint``, ``grow_layers`` and ``reading`` sections of an align config
    (:mod:`omnishift.align.config`); ``minutes``: its measured time on 2 cores."""

    name: str
    objectives: list = field(default_factory=lambda: [{"name": "ctc"}])
    optim: dict = field(default_factory=dict)
    loop: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)
    grow_layers: int = 0
    reading: dict | None = None
    minutes: float | None = None


@dataclass
class RecipeConfig:
    """A recipe (see the module docstring). ``makes`` and ``measured`` say, for ``omnishift align ls``, what
    it gives and what was measured when it last ran from nothing."""

    out_dir: str
    model: SpeechLLMConfig = field(default_factory=lambda: SpeechLLMConfig(adaptor_norm=True, ctc_head=True,
                                                                         frame_policy="clip"))
    sets: list = field(default_factory=list)
    phases: list = field(default_factory=list)
    precision: str = "auto"
    decoding: dict | None = None
    speech_input: str = "ctc_top1"
    speech_options: dict | None = None
    workers: int = 2
    makes: str = ""
    measured: str = ""


def load_recipe(spec: str | Path, overrides: list[str] | tuple = ()) -> tuple[RecipeConfig, str]:
    """A recipe by name (:data:`RECIPES`) or YAML path, with ``key=value`` overrides; ``(config, origin)``."""
    path = shipped(str(spec)) if str(spec) in RECIPES else Path(spec)
    data, origin = read_yaml(path, overrides, "recipe")
    cfg = build(RecipeConfig, data, "", origin)
    cfg.sets = [build(SetSpec, s, f"sets[{i}]", origin) for i, s in enumerate(cfg.sets)]
    cfg.phases = [build(PhaseSpec, p, f"phases[{i}]", origin) for i, p in enumerate(cfg.phases)]
    _check(cfg, origin)
    return cfg, origin


def shipped(name: str) -> Path:
    """The packaged YAML of recipe ``name``."""
    from omnishift.paths import builtin_file

    return builtin_file(RECIPES[name])


def is_recipe(spec: str) -> bool:
    """Whether ``omnishift align SPEC`` names a recipe (a registered name, or a YAML with ``phases``)."""
    if spec in RECIPES:
        return True
    import yaml

    p = Path(spec)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8")) if p.is_file() else None
    except (yaml.YAMLError, UnicodeDecodeError):
        return False  # the align-config reader names the error and its line
    return isinstance(d, dict) and "phases" in d


def _check(cfg: RecipeConfig, origin: str) -> None:
    if not cfg.sets or not cfg.phases:
        raise ConfigError(f"{origin}: a recipe needs at least one entry under sets and one under phases")
    for what, items in (("sets", cfg.sets), ("phases", cfg.phases)):
        names = [x.name for x in items]
        if len(set(names)) != len(names) or any(not n or "/" in n for n in names):
            raise ConfigError(f"{origin}: {what} need distinct plain names, got {names}")
    for i, s in enumerate(cfg.sets):
        require(s, f"{origin}: sets[{i}]", ("n", AT_LEAST_1), ("lead_silence", NON_NEGATIVE),
                ("trail_silence", NON_NEGATIVE))
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"{origin}: precision {cfg.precision!r} unknown; use one of {list(PRECISIONS)}")
    if cfg.speech_input not in SPEECH_INPUTS:
        raise ConfigError(f"{origin}: speech_input {cfg.speech_input!r} unknown; use one of {list(SPEECH_INPUTS)}")
    if not cfg.model.ctc_head:
        raise ConfigError(f"{origin}: model.ctc_head must be true (the phases align with CTC over the LLM's vocabulary)")
    if cfg.decoding is not None:
        from omnishift.models.ctc_decode import BeamSettings

        try:
            BeamSettings(**cfg.decoding)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{origin}: decoding {cfg.decoding}: {e}") from None
    for i, p in enumerate(cfg.phases):
        for o in p.objectives:
            if set(BF16_OPTIONS) & set((o or {}).get("options", {})):
                raise ConfigError(f"{origin}: phases[{i}]: set the recipe's precision (auto, bf16, float32), "
                                  "not bf16_* options per objective")


# ---- running ---------------------------------------------------------------------------------
def use_bf16(precision: str) -> bool:
    """``auto``: bfloat16 where this CPU (or GPU) multiplies it natively; else as asked."""
    from omnishift.models.precision import native_bf16

    return native_bf16() if precision == "auto" else precision == "bf16"


def set_dir(cfg: RecipeConfig, s: SetSpec) -> Path:
    return Path(cfg.out_dir) / "sets" / s.name


def phase_dir(cfg: RecipeConfig, p: PhaseSpec) -> Path:
    return Path(cfg.out_dir) / "phases" / p.name


def _with_precision(objective: dict, bf16: bool) -> dict:
    """The objective with its bfloat16 options set from the recipe's precision (where it has them)."""
    from omnishift.align.objectives import OBJECTIVES

    o = dict(objective)
    fields = {f.name for f in dataclasses.fields(OBJECTIVES[o.get("name", "ctc")].options)}
    o["options"] = {**o.get("options", {}), **{k: bf16 for k in BF16_OPTIONS if k in fields}}
    return o


def phase_config(cfg: RecipeConfig, i: int, bf16: bool, origin: str = "recipe"):
    """The :class:`AlignConfig` of phase ``i``: every set, the first phase on a fresh adaptor, a later
    one on the adaptor of the phase before it."""
    from omnishift.align.config import align_config_from_dict

    p = cfg.phases[i]
    model = dataclasses.asdict(cfg.model) if i == 0 else str(phase_dir(cfg, cfg.phases[i - 1]) / "final")
    data = {"model": model, "data": {"set": [str(set_dir(cfg, s)) for s in cfg.sets], **p.data},
            "objectives": [_with_precision(o, bf16) for o in p.objectives], "optim": p.optim,
            "loop": {**p.loop, "progress": False}, "checkpoint": p.checkpoint, "grow_layers": p.grow_layers,
            "reading": p.reading, "out_dir": str(phase_dir(cfg, p))}
    return align_config_from_dict(data, f"{origin}: phase {p.name!r}")


class _Bar:
    """One progress bar over the whole recipe, in expected seconds: each part advances it by the
    share of its own work done (clips built, steps trained) times its measured (or estimated) cost."""

    def __init__(self, cfg: RecipeConfig, show: bool):
        from tqdm.auto import tqdm

        self.cost = {("set", s.name): (s.minutes * 60 if s.minutes else s.n * _CLIP_S) for s in cfg.sets}
        self.cost |= {("phase", p.name): (p.minutes * 60 if p.minutes else p.loop.get("max_steps", 1000) * _STEP_S)
                      for p in cfg.phases}
        self.done = dict.fromkeys(self.cost, 0.0)
        self.bar = tqdm(total=round(sum(self.cost.values())), unit="s", desc="recipe", disable=not show,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def part(self, kind: str, name: str, fraction: float) -> None:
        self.done[(kind, name)] = min(1.0, fraction) * self.cost[(kind, name)]
        self.bar.n = round(sum(self.done.values()))
        self.bar.set_description_str(f"recipe ({kind} {name} {100 * fraction:.0f}%)", refresh=True)

    def close(self) -> None:
        self.bar.close()


def _build_set(cfg: RecipeConfig, s: SetSpec, bar: _Bar) -> dict:
    from omnishift.data.augment import AugmentConfig, parse_engines
    from omnishift.align.dataset import alignment_texts, build_alignment_set, parse_text_parts

    if s.source:
        from omnishift.data.sources import load_source
        from omnishift.paths import resolve_builtin

        texts = [(e.id, e.text) for e in load_source(resolve_builtin(s.source))]
    else:
        texts = alignment_texts(parts=parse_text_parts(s.texts))
    m = cfg.model
    aug = AugmentConfig(engines=parse_engines(s.engines), lead_silence=(0.0, s.lead_silence),
                        trail_silence=(0.0, s.trail_silence))
    return build_alignment_set(set_dir(cfg, s), s.n, encoder=m.encoder, seed=s.seed, workers=cfg.workers, texts=texts,
                               policy={"policy": m.frame_policy, "k": m.k, "margin_s": m.trim_margin_s},
                               augment_cfg=aug, progress=False,
                               on_clips=lambda done, n: bar.part("set", s.name, done / n))


def _assemble(cfg: RecipeConfig, last: Path, final: Path) -> Path:
    """``final``: the last phase's adaptor, reading speech as the recipe says (as it was validated)."""
    from omnishift.models.speech_llm import SpeechLLM

    model = SpeechLLM.from_pretrained(last, reading={"speech_input": cfg.speech_input, "ctc_decoding": cfg.decoding,
                                                     "speech_options": cfg.speech_options})
    return model.save_pretrained(final, llm_is_base=True)


def _part(folder: Path, inputs: dict, what: str, redo: bool, done: str) -> None:
    """A set or phase folder made from other inputs: emptied under ``redo``, refused otherwise."""
    from omnishift.reuse import reuse_unit

    reuse_unit(folder, inputs, what=what, redo=redo, complete=lambda d: (d / done).exists(),
               fix="rerun with a new out_dir (or, in omnishift run, --redo align)")


def _set_inputs(cfg: RecipeConfig, s: SetSpec) -> dict:
    m = cfg.model
    return {**{k: v for k, v in dataclasses.asdict(s).items() if k != "minutes"}, "encoder": m.encoder,
            "policy": [m.frame_policy, m.k, m.trim_margin_s]}


def run_recipe(cfg: RecipeConfig, origin: str = "recipe", progress: bool = True, redo: bool = False,
               final: str | Path | None = None) -> Path:
    """Build every set, train every phase, assemble the final folder; resumable. Returns that folder.

    ``redo``: a set or phase made from other inputs than now is emptied and made again (default:
    refused, naming what changed). ``final``: where the model is assembled, with ``recipe.json``
    beside it (default ``out_dir/final``). Why: a study reads the recipe's adaptor its own way
    (another ``speech_input``) without rewriting the folder that ``omnishift align NAME`` made."""
    from omnishift.align.trainer import align, alignment_inputs
    from omnishift.models.precision import cpu_description
    from omnishift.paths import ensure_writable_dir

    out = ensure_writable_dir(cfg.out_dir, "out_dir")
    bf16, bar, parts, t_all = use_bf16(cfg.precision), _Bar(cfg, progress), [], time.perf_counter()
    try:
        for s in cfg.sets:
            t0 = time.perf_counter()
            _part(set_dir(cfg, s), _set_inputs(cfg, s), f"alignment set {s.name!r}", redo, "summary.json")
            info = _build_set(cfg, s, bar)
            parts.append({"set": s.name, "seconds": round(time.perf_counter() - t0, 1), "clips": info.get("clips"),
                          "expected_minutes": s.minutes})
        for i, p in enumerate(cfg.phases):
            acfg, t0 = phase_config(cfg, i, bf16, origin), time.perf_counter()
            _part(phase_dir(cfg, p), alignment_inputs(acfg), f"alignment phase {p.name!r}", redo, "final")
            steps = acfg.loop.max_steps
            align(acfg, resume=True, on_step=lambda rec, p=p, n=steps: bar.part("phase", p.name, rec["step"] / n))
            bar.part("phase", p.name, 1.0)
            summary = json.loads((phase_dir(cfg, p) / "summary.json").read_text(encoding="utf-8"))
            parts.append({"phase": p.name, "seconds": round(time.perf_counter() - t0, 1), "steps": steps,
                          "expected_minutes": p.minutes, "summary": summary})
    finally:
        bar.close()
    final = _assemble(cfg, phase_dir(cfg, cfg.phases[-1]) / "final", Path(final or out / "final"))
    record = {"recipe": origin, "precision": {"asked": cfg.precision, "bf16": bf16, "machine": cpu_description()},
              "parts": parts, "seconds_this_call": round(time.perf_counter() - t_all, 1), "final": str(final),
              "decoding": cfg.decoding, "speech_input": cfg.speech_input, "speech_options": cfg.speech_options}
    atomic_write_text(final.parent / "recipe.json", json.dumps(record, indent=2) + "\n")
    return final
