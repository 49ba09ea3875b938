"""Stage-1 training configuration: typed sections, read from YAML with ``a.b=value`` overrides.

A run is described by one YAML file whose sections map onto the dataclasses below::

    model:       SpeechLLMConfig fields (llm, encoder, k, frame_policy, ...), or a string: the
                 folder of a saved speech LLM to continue from
    data:        where items come from (source spec, modality, limit, audio_dir, max_response_tokens)
    method:      name (a key of omnishift.train.methods.METHODS) + options (that method's fields)
    optim:       lr, adaptor_lr, weight_decay, warmup_ratio, max_grad_norm
    loop:        epochs, max_steps, batch_size, grad_accum, seed, log_every, progress, device
    checkpoint:  save_every, keep_last
    out_dir:     run folder (checkpoints/, log.jsonl, config.yaml, final/)

Every mapping is checked against its dataclass: a misspelt key (``optim.learning_rate``) is an
error naming the key, the file and the valid keys, never a silently ignored default. Values are
coerced to the field's type, which also repairs a PyYAML quirk: YAML 1.1 reads ``2e-5`` (no dot)
as a *string*, so float fields accept numeric strings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from omnishift.models.speech_llm import SpeechLLMConfig


@dataclass
class DataConfig:
    """Where the training items come from (see :func:`omnishift.train.trainer.build_items`).

    Args:
        source: source spec for :func:`omnishift.data.sources.load_source`
            (``instructions:alpaca_gpt4_llamafactory_demo1k``, a manifest path, ...).
        modality: ``speech`` (Stage 1: spoken question, text answer) or ``text``.
        limit: read at most this many examples.
        audio_dir: where missing audio is synthesized with eSpeak NG (and reused).
        max_response_tokens: labelled response tokens kept per item (later ones are not trained
            on and are cropped from the batch); None keeps all.
        feature_cache: folder of the frozen encoder's cached outputs (None: encode every step).
    """

    source: str | None = None
    modality: str = "speech"
    limit: int | None = None
    audio_dir: str | None = None
    max_response_tokens: int | None = 256
    feature_cache: str | None = None


@dataclass
class MethodConfig:
    """Which parameters train and at what rate: a key of ``METHODS`` and that method's options."""

    name: str = "full"
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW + cosine schedule; lr, warm-up and schedule as LLaMA-Omni Stage 1.

    Args:
        lr: base LR of LLM parameters (method groups scale it, e.g. eq. 3).
        adaptor_lr: LR of the (freshly initialised) adaptor. LLaMA-Omni uses one LR for all
            (the paper configs set 2e-5); the 1e-4 default follows LLaVA-style projector LRs,
            which a short CPU run needs to move a random adaptor at all.
        weight_decay: AdamW decoupled weight decay, all groups.
        warmup_ratio: share of optimizer steps with linear warm-up.
        max_grad_norm: global gradient-norm clip over all trainable parameters (None: no clip).
    """

    lr: float = 2e-5
    adaptor_lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float | None = 1.0


@dataclass
class LoopConfig:
    """The training loop.

    Args:
        epochs: passes over the items (ignored when ``max_steps`` is set).
        max_steps: optimizer steps in total; overrides ``epochs``.
        batch_size: items per micro-batch.
        grad_accum: micro-batches per optimizer step.
        seed: seeds torch/numpy/random and the per-epoch data order (seed + epoch).
        log_every: write a ``log.jsonl`` record every this many optimizer steps.
        progress: show a tqdm bar.
        device: ``auto`` (CUDA if present, with bf16 autocast), ``cpu`` or ``cuda``.
    """

    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 4
    seed: int = 0
    log_every: int = 1
    progress: bool = True
    device: str = "auto"


@dataclass
class CheckpointConfig:
    """Resumable checkpoints under ``out_dir/checkpoints/step-NNNNNNNN``.

    Args:
        save_every: optimizer steps between checkpoints (0: none).
        keep_last: checkpoints kept (older ones are deleted; 0 keeps all).
    """

    save_every: int = 200
    keep_last: int = 2


@dataclass
class TrainConfig:
    """One Stage-1 training run (see the module docstring for the YAML layout)."""

    model: SpeechLLMConfig | str = field(default_factory=SpeechLLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    out_dir: str = "runs/train"

    def to_dict(self) -> dict:
        """Plain nested dict (what ``config.yaml`` in the run folder holds)."""
        return dataclasses.asdict(self)


# ---- building dataclasses from dicts ---------------------------------------------------------
class ConfigError(ValueError):
    """A config key or value that does not fit the schema."""


def build(cls, data, where: str, origin: str = "config"):
    """Make dataclass ``cls`` from a mapping, rejecting unknown keys and coercing types.

    Args:
        cls: a dataclass type.
        data: a mapping (None means all defaults).
        where: dotted path of this section (for messages), "" at the top.
        origin: what the values came from (file name), for messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: unknown or missing keys, or a value of the wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: '{where or '<top>'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{origin}: unknown key '{key}'; valid keys{' in ' + repr(where) if where else ''}: "
                          f"{sorted(fields)}")
    missing = [n for n, f in fields.items() if n not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{origin}: '{where or '<top>'}' needs key(s) {missing}")
    kw = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k, origin) for k, v in data.items()}
    return cls(**kw)


def _coerce(value, tp, where: str, origin: str):
    """Check/convert ``value`` to type hint ``tp`` (dataclass, Optional/union, scalars, list, dict)."""
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, where, origin)
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, dict) or any(dataclasses.is_dataclass(a) and isinstance(value, a) for a in args):
            for a in args:
                if dataclasses.is_dataclass(a):  # a mapping is that dataclass's fields
                    return _coerce(value, a, where, origin)
        for a in (a for a in args if a is not type(None) and not dataclasses.is_dataclass(a)):
            try:
                return _coerce(value, a, where, origin)
            except ConfigError:
                pass
        raise ConfigError(f"{origin}: '{where}' = {value!r} does not fit {_name(tp)}")
    base = typing.get_origin(tp) or tp
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
    elif base in (list, dict):
        if isinstance(value, base):
            return value
    else:
        return value
    raise ConfigError(f"{origin}: '{where}' = {value!r} is not a {_name(tp)}")


def _name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ---- YAML + overrides ------------------------------------------------------------------------
def apply_override(data: dict, override: str) -> dict:
    """Set ``a.b.c=value`` in a nested dict (value parsed with ``yaml.safe_load``); returns ``data``."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    parts = key.strip().split(".")
    node = data
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {override!r}: '{'.'.join(parts[:i + 1])}' is {nxt!r}, not a section")
        node = nxt
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def config_from_dict(data: dict, origin: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` (method name and options included)."""
    cfg = build(TrainConfig, data, "", origin)
    from omnishift.train.methods import parse_options

    parse_options(cfg.method.name, cfg.method.options, origin)  # fail at load time, not at step 0
    return cfg


def load_config(yaml_path: str | Path | None, overrides: list[str] | tuple = ()) -> TrainConfig:
    """Read a training YAML, apply ``section.key=value`` overrides and validate everything.

    Args:
        yaml_path: the YAML file (None: start from the defaults).
        overrides: e.g. ``["optim.lr=1e-5", "method.name=lora", "method.options.r=16"]``.

    Returns:
        The :class:`TrainConfig`.

    Raises:
        ConfigError: unknown keys (naming the key, the file and the valid keys), bad values.
    """
    data, origin = read_yaml(yaml_path, overrides, "training config")
    return config_from_dict(data, origin)


def read_yaml(yaml_path: str | Path | None, overrides: list[str] | tuple = (), what: str = "config") -> tuple[dict, str]:
    """A config YAML as a dict with ``section.key=value`` overrides applied, and where it came from.

    Raises:
        FileNotFoundError: ``yaml_path`` does not exist (named as ``what``).
        ConfigError: the top level is not a mapping; an override is malformed.
    """
    data, origin = {}, "defaults"
    if yaml_path is not None:
        origin = str(yaml_path)
        if not Path(yaml_path).is_file():
            raise FileNotFoundError(f"{what} {yaml_path} not found")
        data = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: top level must be a mapping of sections")
    for o in overrides:
        data = apply_override(data, o)
    if overrides:
        origin += " (with overrides " + " ".join(overrides) + ")"
    return data, origin


def _flatten(d: dict, prefix=()) -> dict:
    out = {}
    for k, v in d.items():
        key = prefix + (k,)
        if isinstance(v, dict) and k != "options":
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def check_same_run(out_dir: Path, new: dict, may_differ: set) -> None:
    """A resumed run must compute the same thing: compare ``new`` with the saved ``config.yaml``.

    Args:
        out_dir: the run folder (nothing to check when it holds no ``config.yaml``).
        new: the resuming run's config as a nested dict.
        may_differ: key-path prefixes (tuples) whose values do not change what the run computes.

    Raises:
        ValueError: naming the changed keys.
    """
    saved = Path(out_dir) / "config.yaml"
    if not saved.is_file():
        return
    old, cur = _flatten(yaml.safe_load(saved.read_text()) or {}), _flatten(new)
    diff = sorted(".".join(k) for k in set(old) | set(cur) if old.get(k) != cur.get(k)
                  and not any(k[:len(p)] == p for p in may_differ))
    if diff:
        raise ValueError(f"{out_dir}: cannot resume with a different config (changed: {diff}); "
                         "use a new out_dir for a new run")


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of ``cfg`` that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
