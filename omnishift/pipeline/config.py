"""Experiment configuration: one YAML names the data, the analyses, the methods and the evaluation.

An experiment is what ``omnishift run EXPERIMENT.yaml`` executes stage by stage (:mod:`.runner`)::

    name:        run folder name (outputs go to OUT_ROOT/NAME/STAGE/)
    out_root:    parent of the run folder (default: runs)
    model:       SpeechLLMConfig fields of the base speech LLM (LLM, encoder, adaptor shape)
    stages:      which stages run (default: all, in pipeline order)
    data:        training instructions, held-out set, synthesis voice
    importance:  Taylor importance of the base model (text and speech input) and after training
    deactivation: Table 1 (zero top / bottom / random k%)
    align:       the alignment recipe run before Stage 1 (``omnishift align NAME``; off without one)
    train:       methods: {LABEL: {config: TRAIN.yaml, overrides: [key=value, ...]}}
    evaluate:    benchmarks: {NAME: {source, limit, subset, seed}}, modes, baselines, decoding
    ablation:    LoRA ranks for Table 3 (empty: skipped)
    report:      title, reference (the method the others are paired with)

Reading reuses the training config's machinery (:func:`omnishift.train.config.build`): every
section is checked against its dataclass, a misspelt key is an error naming it, the file and the
valid keys, and ``section.key=value`` overrides work as for ``omnishift train``.

Paths: ``builtin:NAME`` names a file shipped in ``omnishift/configs`` (the demo's data and training
config); other relative paths are tried against the working folder, then the experiment file's
folder.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from omnishift.models.speech_llm import SpeechLLMConfig
from omnishift.paths import builtin_file
from omnishift.pipeline.stages import STAGES
from omnishift.schema import (AT_LEAST_1, NON_NEGATIVE, NONE_OR_AT_LEAST_1, POSITIVE, ConfigError, build, read_yaml,
                              require)

BASELINES = ("no_ft", "cascade")


@dataclass
class DataSection:
    """Args:
        train: source spec of the training instructions (``instructions:<stem>``, a manifest, ``builtin:...``).
        train_limit: instructions read (the first N with a response).
        heldout: source of the held-out set for Table 1 (None: the first ``deactivation.limit``
            training items).
        heldout_limit: held-out items read.
        voice, rate: eSpeak NG voice and words per minute of every synthesized benchmark question, and of
            the instructions when ``engines`` is unset.
        engines: speak the training and held-out instructions with many speakers instead:
            ``"espeak=2,pico=1,piper=1"`` (:class:`omnishift.data.voices.SpeakerMix`; each prompt's engine,
            voice and channel effects drawn from ``speaker_seed`` and its id).
        speaker_seed: the seed of that draw.
    """

    train: str = "instructions:alpaca_gpt4_llamafactory_demo1k"
    train_limit: int | None = 1000
    heldout: str | None = None
    heldout_limit: int = 64
    voice: str = "en-us"
    rate: int = 175
    engines: str | None = None
    speaker_seed: int = 0


@dataclass
class ImportanceSection:
    """Args:
        modalities: base-model passes (``text`` and/or ``speech``; eq. 3 and region_freeze need text).
        mode, fraction, batch_size, max_response_tokens, seed: :class:`ImportanceConfig` settings.
        limit: training items considered (the pass uses ``fraction`` of them).
        after_training: also score TEXT importance of every trained model (Fig. 2-3).
        cluster_fraction: Top-region share of Fig. 1.
        layer: decoder layer shown in Fig. 1 and Fig. 4 (None: the middle one).
        lam: λ of eq. 3 (layer-wise LR coefficients).
    """

    modalities: list = field(default_factory=lambda: ["text", "speech"])
    mode: str = "dataset"
    fraction: float = 1 / 30
    limit: int | None = None
    batch_size: int = 4
    max_response_tokens: int = 128
    seed: int = 0
    after_training: bool = True
    cluster_fraction: float = 0.05
    layer: int | None = None
    lam: float = 0.4


@dataclass
class DeactivationSection:
    """Args: enabled; fraction zeroed (paper 3%); limit: held-out items per input; scope
    (``layers`` or ``all``); batch_size; max_response_tokens; after_training: labels of trained
    methods whose Stage-1 model gets Table 1 too, zeroing its own top text-important entries (its
    ``importance_after`` scores), so that one sees whether the text-critical core survives Stage 1."""

    enabled: bool = True
    fraction: float = 0.03
    limit: int = 64
    scope: str = "layers"
    batch_size: int = 4
    max_response_tokens: int = 128
    after_training: list = field(default_factory=list)


@dataclass
class AlignSection:
    """Args:
        recipe: the alignment recipe run before Stage 1 (a name of ``omnishift align ls``, a recipe YAML
            or ``builtin:...``); None skips the stage (methods then start from a fresh adaptor, as in
            the paper). It runs through the same code as ``omnishift align NAME``, into the run's
            ``align/`` folder, on the experiment's ``model``.
        overrides: ``key=value`` overrides of the recipe (``phases.0.loop.max_steps=100``).
        workers: processes that decode the run's clips once when the aligned model reads its CTC
            path by beam search.
        out_dir: run the recipe's sets and phases in this folder instead of the run's ``align/``:
            the folder of ``omnishift align NAME`` (``runs/align/cpu_listen``) shares them, each part
            reused only when made from the same inputs. The study's model is still assembled in
            ``align/final``, so that folder's own ``final/`` is left as it is.
        reading: how the study's model reads speech, instead of the recipe's: any of ``speech_input``,
            ``speech_options``, ``ctc_decoding`` (``{speech_input: ctc_soft, ctc_decoding: null}``: continuous
            vectors with gradient, greedy CTC segments, no beam search over the training clips).
    """

    recipe: str | None = None
    overrides: list = field(default_factory=list)
    workers: int = 2
    out_dir: str | None = None
    reading: dict | None = None


@dataclass
class MethodSpec:
    """One trained model: a training YAML (None: the trainer's defaults) and overrides.

    The pipeline then sets, last: ``model`` (the experiment's), ``data.source`` / ``data.audio_dir``
    (the synthesized training manifest), ``out_dir`` (``train/LABEL``), ``method.name`` (the label
    when the config names none and the label is a method), and for ``layer_lr`` / ``region_freeze``
    the eq. 3 coefficients / TEXT scores of this run's base model.
    """

    config: str | None = None
    overrides: list = field(default_factory=list)


@dataclass
class DriftSection:
    """The forgetting curve of every trained method (:mod:`omnishift.evaluate.drift`).

    Args:
        source: held-out text instructions no stage trains on (a source spec; None: no curve).
        limit: prompts (about 200 give intervals of a few hundredths of a nat).
        every: optimizer steps between points (step 0 and the last step are always measured).
        flip: also the answer-flip rate on them (generates each model's answers: the expensive part;
            long open-ended answers almost all flip after a few steps).
        max_new_tokens: answer length of the base model and of the trained ones.
        qa: names of ``evaluate.benchmarks`` whose questions are also probed as text, asked and decoded
            as the evaluate stage asks them: T2T accuracy, flips of the short answers, KL and ΔNLL at
            every point (the last point's T2T is the evaluate stage's T2T of the model).
    """

    source: str | None = None
    limit: int = 200
    every: int = 0
    flip: bool = True
    max_new_tokens: int = 32
    qa: list = field(default_factory=list)


@dataclass
class TrainSection:
    """Args: methods: ``{LABEL: MethodSpec}`` in training order; overrides: applied to every method
    before its own; drift: the forgetting curves (:class:`DriftSection`)."""

    methods: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    drift: DriftSection = field(default_factory=DriftSection)


@dataclass
class BenchmarkSpec:
    """Args: source (``llama_questions``, ``web_questions[:split]``, a manifest, ``builtin:...``);
    limit (first N); subset (then a fixed-seed sample of N); seed."""

    source: str
    limit: int | None = None
    subset: int | None = None
    seed: int = 0


@dataclass
class EvaluateSection:
    """Args: benchmarks ``{NAME: BenchmarkSpec}``; modes; baselines (``no_ft``: the base LLM's T2T,
    ``cascade``: Whisper ASR -> base LLM, S2T); asr_model (CTranslate2 folder, None: shipped tiny.en);
    prompt; batch_size; max_new_tokens; feature_cache (folder of cached Whisper encoder outputs,
    shared by every S2T evaluation so each benchmark clip is encoded once; None: encode per model);
    listening: held-out items of the listening check per speech model (response PPL with each
    item's own clip vs another's, :func:`omnishift.evaluate.listening.listening_check`; 0: off)."""

    benchmarks: dict = field(default_factory=dict)
    modes: list = field(default_factory=lambda: ["t2t", "s2t"])
    baselines: list = field(default_factory=lambda: list(BASELINES))
    asr_model: str | None = None
    prompt: str = "instruction"
    batch_size: int = 16
    max_new_tokens: int = 64
    feature_cache: str | None = None
    listening: int = 0


@dataclass
class AblationSection:
    """Args: ranks (empty: no ablation); config: training YAML (None: the ``lora`` method's, else the
    first method's); overrides after it; benchmarks: names evaluated (None: all)."""

    ranks: list = field(default_factory=list)
    config: str | None = None
    overrides: list = field(default_factory=list)
    benchmarks: list | None = None


@dataclass
class ReportSection:
    """Args: title: of the report page; reference: the method every other one is paired with (forgetting
    table, paired accuracy differences); a reference that was not trained leaves those comparisons out."""

    title: str = ""
    reference: str = "full"


@dataclass
class ExperimentConfig:
    """One experiment (see the module docstring for the YAML layout)."""

    name: str
    out_root: str = "runs"
    model: SpeechLLMConfig = field(default_factory=SpeechLLMConfig)
    stages: list | None = None
    data: DataSection = field(default_factory=DataSection)
    importance: ImportanceSection = field(default_factory=ImportanceSection)
    deactivation: DeactivationSection = field(default_factory=DeactivationSection)
    align: AlignSection = field(default_factory=AlignSection)
    train: TrainSection = field(default_factory=TrainSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
    ablation: AblationSection = field(default_factory=AblationSection)
    report: ReportSection = field(default_factory=ReportSection)
    base_dir: str = "."  # folder of the YAML (relative paths); set by load_experiment

    @property
    def run_dir(self) -> Path:
        return Path(self.out_root) / self.name

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d

    def resolve(self, path: str | None) -> str | None:
        """``builtin:NAME`` -> the packaged file; a relative path -> cwd, else beside the YAML."""
        return resolve_path(path, self.base_dir)

    def stage_list(self) -> list[str]:
        return list(self.stages) if self.stages else list(STAGES)


def builtin_path(name: str) -> Path:
    """A file shipped in ``omnishift/configs`` (``demo.yaml``, ``demo_data/qa_trivia.jsonl``, ...)."""
    return builtin_file(name)


def resolve_path(path: str | None, base_dir: str | Path = ".") -> str | None:
    """Resolve ``builtin:`` names and relative file paths (non-file specs are returned unchanged)."""
    if path is None:
        return None
    if path.startswith("builtin:"):
        return str(builtin_path(path[len("builtin:"):]))
    p = Path(path)
    if p.is_absolute() or p.exists() or not (Path(base_dir) / p).exists():
        return path
    return str(Path(base_dir) / p)


def _check(cfg: ExperimentConfig, origin: str) -> ExperimentConfig:
    from omnishift.train.methods import METHODS

    if not cfg.name or any(c in cfg.name for c in "/\\") or cfg.name in (".", "..") or cfg.name.startswith("."):
        raise ConfigError(f"{origin}: name must be a plain folder name inside out_root (no '/', '\\', '.' or '..' "
                          f"at its start), got {cfg.name!r}")
    unknown = [s for s in cfg.stage_list() if s not in STAGES]
    if unknown:
        raise ConfigError(f"{origin}: unknown stage {unknown[0]!r}; stages are {list(STAGES)}")
    bad = [m for m in cfg.importance.modalities if m not in ("text", "speech")]
    if bad or not cfg.importance.modalities:
        raise ConfigError(f"{origin}: importance.modalities must be a non-empty subset of [text, speech], got "
                          f"{cfg.importance.modalities}")
    if cfg.align.recipe is not None:
        from omnishift.align.recipe import RECIPES

        if cfg.align.recipe not in RECIPES and not Path(cfg.resolve(cfg.align.recipe)).is_file():
            raise ConfigError(f"{origin}: align.recipe: {cfg.align.recipe!r} is neither a shipped recipe "
                              f"({sorted(RECIPES)}) nor a recipe YAML")
        if not cfg.model.ctc_head:
            raise ConfigError(f"{origin}: align needs model.ctc_head: true (the CTC objective scores the LLM's vocabulary)")
    require(cfg, origin, ("data.train_limit", NONE_OR_AT_LEAST_1), ("data.heldout_limit", AT_LEAST_1),
            ("data.rate", AT_LEAST_1), ("importance.limit", NONE_OR_AT_LEAST_1), ("importance.batch_size", AT_LEAST_1),
            ("importance.max_response_tokens", AT_LEAST_1), ("importance.fraction", POSITIVE),
            ("deactivation.limit", AT_LEAST_1), ("deactivation.batch_size", AT_LEAST_1),
            ("deactivation.max_response_tokens", AT_LEAST_1), ("align.workers", NON_NEGATIVE),
            ("evaluate.batch_size", AT_LEAST_1), ("evaluate.max_new_tokens", AT_LEAST_1),
            ("evaluate.listening", NON_NEGATIVE), ("train.drift.limit", AT_LEAST_1),
            ("train.drift.every", NON_NEGATIVE), ("train.drift.max_new_tokens", AT_LEAST_1))
    if cfg.train.drift.source is not None and cfg.train.drift.source == cfg.data.train:
        raise ConfigError(f"{origin}: train.drift.source is data.train ({cfg.data.train!r}): drift is measured on "
                          "held-out instructions that no stage trains on; name another source")
    if cfg.evaluate.prompt not in ("instruction", "plain"):
        raise ConfigError(f"{origin}: evaluate.prompt: {cfg.evaluate.prompt!r} unknown; use instruction or plain")
    methods = {}
    for label, spec in (cfg.train.methods or {}).items():
        spec = build(MethodSpec, spec, f"train.methods.{label}", origin)
        if spec.config is not None:
            resolved = cfg.resolve(spec.config)
            if not Path(resolved).is_file():
                raise ConfigError(f"{origin}: train.methods.{label}.config: training config {spec.config!r} not "
                                  f"found (looked in {Path.cwd()} and {cfg.base_dir})")
        elif label not in METHODS:
            raise ConfigError(f"{origin}: train.methods.{label} has no config and {label!r} is not a method "
                              f"name ({sorted(METHODS)}); give config: PATH or name it after its method")
        methods[str(label)] = spec
    cfg.train.methods = methods
    for label in cfg.deactivation.after_training:
        if label not in methods:
            raise ConfigError(f"{origin}: deactivation.after_training: {label!r} is not one of train.methods "
                              f"{sorted(methods)}")
    if cfg.deactivation.after_training and not cfg.importance.after_training:
        raise ConfigError(f"{origin}: deactivation.after_training zeroes each model's own top text-important "
                          "entries, scored by importance_after: set importance.after_training: true")
    benches = {}
    for name, spec in (cfg.evaluate.benchmarks or {}).items():
        if isinstance(spec, str):
            spec = {"source": spec}
        benches[str(name)] = b = build(BenchmarkSpec, spec, f"evaluate.benchmarks.{name}", origin)
        require(b, f"{origin}: evaluate.benchmarks.{name}", ("limit", NONE_OR_AT_LEAST_1), ("subset", NONE_OR_AT_LEAST_1))
    cfg.evaluate.benchmarks = benches
    for m in cfg.evaluate.modes:
        if m not in ("t2t", "s2t"):
            raise ConfigError(f"{origin}: evaluate.modes: {m!r} unknown; use t2t and/or s2t")
    for b in cfg.evaluate.baselines:
        if b not in BASELINES:
            raise ConfigError(f"{origin}: evaluate.baselines: {b!r} unknown; use {list(BASELINES)}")
    if cfg.ablation.ranks and not (cfg.ablation.config or methods):
        raise ConfigError(f"{origin}: ablation.ranks is set but there is no training config to ablate "
                          "(set ablation.config or list a method under train.methods)")
    for b in cfg.train.drift.qa:
        if b not in benches:
            raise ConfigError(f"{origin}: train.drift.qa: {b!r} is not one of evaluate.benchmarks {sorted(benches)}")
    if cfg.train.drift.qa and not cfg.train.drift.every:
        raise ConfigError(f"{origin}: train.drift.qa is set but train.drift.every is 0 (no forgetting curve): "
                          "set every to the steps between points")
    for b in cfg.ablation.benchmarks or []:
        if b not in benches:
            raise ConfigError(f"{origin}: ablation.benchmarks: {b!r} is not one of evaluate.benchmarks {sorted(benches)}")
    return cfg


def experiment_from_dict(data: dict, origin: str = "experiment", base_dir: str | Path = ".") -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested dict."""
    cfg = build(ExperimentConfig, {**data, "base_dir": str(base_dir)}, "", origin)
    return _check(cfg, origin)


def load_experiment(path: str | Path, overrides: list[str] | tuple = ()) -> ExperimentConfig:
    """Read an experiment YAML (or ``builtin:demo.yaml``), apply ``a.b=value`` overrides, validate.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unknown keys or stages, missing method configs, bad values.
    """
    path = Path(resolve_path(str(path)))
    data, origin = read_yaml(path, overrides, what="experiment config")
    return experiment_from_dict(data, origin, path.parent)


def dump_experiment(cfg: ExperimentConfig) -> str:
    """YAML of the validated config (written to the run folder as ``experiment.yaml``)."""
    d = cfg.to_dict()
    d["train"]["methods"] = {k: dataclasses.asdict(v) for k, v in cfg.train.methods.items()}
    d["evaluate"]["benchmarks"] = {k: dataclasses.asdict(v) for k, v in cfg.evaluate.benchmarks.items()}
    return yaml.safe_dump(json.loads(json.dumps(d)), sort_keys=False)
