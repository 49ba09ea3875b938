"""Alignment run configuration: typed sections read from YAML with ``a.b=value`` overrides.

    model:       SpeechLLMConfig fields (use ctc_head: true for ``ctc``; adaptor_norm: true
                 recommended), or the folder of a saved speech LLM whose adaptor continues
    grow_layers: context layers added onto that saved adaptor, starting as the identity
                 (:meth:`FrameStackAdaptor.grow_context`); 0: none
    reading:     how the model reads speech while it is aligned, if not as its folder says
                 (``speech_input``, ``speech_options``, ``ctc_decoding``): e.g. ``{speech_input: ctc_soft,
                 ctc_decoding: null}`` trains the adaptor through the frozen LLM on the continuous path
    data:        the alignment set (``omnishift data align``), limit, held-out clips
    objectives:  list of {name, weight, batch_size, limit, options}: losses of the registry
                 (:data:`omnishift.align.objectives.OBJECTIVES`), summed with their weights
    optim:       lr, weight_decay, warmup_ratio, max_grad_norm (AdamW + cosine, adaptor only)
    loop:        max_steps, seed, log_every, eval_every, progress
    checkpoint:  save_every, keep_last
    out_dir:     run folder (checkpoints/, log.jsonl, config.yaml, final/)

Unknown keys are errors (the same schema checker as ``omnishift train``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from omnishift.models.speech_llm import SpeechLLMConfig
from omnishift.schema import (AT_LEAST_1, FRACTION, NON_NEGATIVE, NONE_OR_AT_LEAST_1, NONE_OR_POSITIVE, POSITIVE,
                              ConfigError, build, read_yaml, require)
from omnishift.train.config import CheckpointConfig


@dataclass
class AlignDataConfig:
    """Args: set: alignment-set folder, or a list of them (e.g. an eSpeak NG and an SVOX Pico set)
    trained on together; limit: clips read per set (None: all); heldout: last clips of each set
    kept out of training for the dev loss and the dev CTC WER."""

    set: str | list[str] = "runs/align_set"
    limit: int | None = None
    heldout: int = 256


@dataclass
class ObjectiveConfig:
    """One loss term. Args: name: registry key; weight: its factor in the sum; batch_size: items
    per step for this term (each term walks its own seeded order); limit: items it may use (the
    first ones of the training split; KD targets are prepared only for those); options: the
    objective's options dataclass fields."""

    name: str = "ctc"
    weight: float = 1.0
    batch_size: int = 32
    limit: int | None = None
    options: dict = field(default_factory=dict)


@dataclass
class AlignOptim:
    """AdamW on the adaptor (and its CTC blank), cosine schedule with linear warm-up."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    max_grad_norm: float | None = 1.0


@dataclass
class AlignLoop:
    """Args: max_steps: optimizer steps; seed: seeds init-free randomness (masks) and data order;
    log_every / eval_every: steps between log records / dev evaluations (0: only at the end)."""

    max_steps: int = 1000
    seed: int = 0
    log_every: int = 10
    eval_every: int = 250
    progress: bool = True


@dataclass
class AlignConfig:
    """One alignment run (see the module docstring)."""

    model: SpeechLLMConfig | str = field(default_factory=lambda: SpeechLLMConfig(adaptor_norm=True, ctc_head=True,
                                                                               frame_policy="clip"))
    data: AlignDataConfig = field(default_factory=AlignDataConfig)
    objectives: list = field(default_factory=lambda: [{"name": "ctc"}])
    optim: AlignOptim = field(default_factory=AlignOptim)
    loop: AlignLoop = field(default_factory=AlignLoop)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(save_every=250))
    out_dir: str = "runs/align"
    grow_layers: int = 0
    reading: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def objective_configs(self) -> list[ObjectiveConfig]:
        """The objectives as validated dataclasses (options checked against the registry)."""
        from omnishift.align.objectives import OBJECTIVES

        out = []
        for i, o in enumerate(self.objectives):
            oc = build(ObjectiveConfig, o, f"objectives[{i}]")
            if oc.name not in OBJECTIVES:
                raise ConfigError(f"objectives[{i}].name {oc.name!r} unknown; valid: {sorted(OBJECTIVES)}")
            build(OBJECTIVES[oc.name].options, oc.options, f"objectives[{i}].options")
            if oc.batch_size < 1 or oc.weight <= 0:
                raise ConfigError(f"objectives[{i}]: batch_size must be >= 1 and weight > 0")
            out.append(oc)
        if not out:
            raise ConfigError("objectives: give at least one (e.g. [{name: ctc}])")
        return out


def load_align_config(yaml_path: str | Path | None, overrides: list[str] | tuple = ()) -> AlignConfig:
    """Read an align YAML, apply ``section.key=value`` overrides, validate everything."""
    data, origin = read_yaml(yaml_path, overrides, "align config")
    return align_config_from_dict(data, origin)


def align_config_from_dict(data: dict, origin: str = "align config") -> AlignConfig:
    """Build and validate an :class:`AlignConfig` from a nested dict (a recipe's phase, a YAML)."""
    cfg = build(AlignConfig, data, "", origin)
    cfg.objective_configs()
    require(cfg, origin, ("loop.max_steps", AT_LEAST_1), ("optim.lr", POSITIVE), ("optim.weight_decay", NON_NEGATIVE),
            ("optim.warmup_ratio", FRACTION), ("optim.max_grad_norm", NONE_OR_POSITIVE),
            ("loop.log_every", AT_LEAST_1), ("loop.eval_every", NON_NEGATIVE), ("data.limit", NONE_OR_AT_LEAST_1),
            ("data.heldout", NON_NEGATIVE), ("checkpoint.save_every", NON_NEGATIVE), ("grow_layers", NON_NEGATIVE))
    if cfg.reading:
        from omnishift.models.speech_llm import READING_KEYS

        unknown = sorted(set(cfg.reading) - set(READING_KEYS))
        if unknown:
            raise ConfigError(f"{origin}: reading keys {unknown} unknown; valid: {list(READING_KEYS)}")
        if not isinstance(cfg.model, str):
            raise ConfigError(f"{origin}: reading applies to a saved model folder; for a fresh adaptor set "
                              "model.speech_input / model.speech_options instead")
    if cfg.grow_layers and not isinstance(cfg.model, str):
        raise ConfigError(f"{origin}: grow_layers adds layers onto a saved adaptor, so model must be its folder; "
                          "for a fresh adaptor set model.adaptor_layers instead")
    return cfg


def dump_align_config(cfg: AlignConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
