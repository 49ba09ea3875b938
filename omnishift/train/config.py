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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from omnishift.models.speech_llm import SpeechLLMConfig
from omnishift.schema import (AT_LEAST_1, FRACTION, NON_NEGATIVE, NONE_OR_AT_LEAST_1, NONE_OR_POSITIVE, POSITIVE,
                              ConfigError, build, read_yaml, require)

__all__ = ["ConfigError", "TrainConfig", "load_config", "dump_config", "config_from_dict"]  # ConfigError re-exported


@dataclass
class DataConfig:
    """Where the training items come from (see :func:`omnishift.train.trainer.build_items`).

    Args:
        source: source spec for :func:`omnishift.data.sources.load_source`
            (``instructions:alpaca_gpt4_llamafactory_demo1k``, a manifest path, ...).
        modality: ``speech`` (Stage 1: spoken question, text answer) or ``text``.
        limit: read at most this many examples.
        audio_dir: where missing audio is synthesized (and reused): one eSpeak NG voice, or ``engines``.
        engines: speak missing audio with many speakers, ``"espeak=2,pico=1,piper=1"``
            (:class:`omnishift.data.voices.SpeakerMix`, drawn from ``speaker_seed`` and each item's id).
        speaker_seed: the seed of that draw.
        max_response_tokens: labelled response tokens kept per item (later ones are not trained
            on and are cropped from the batch); None keeps all.
        feature_cache: folder of the frozen encoder's cached outputs (None: encode every step).
    """

    source: str | None = None
    modality: str = "speech"
    limit: int | None = None
    audio_dir: str | None = None
    engines: str | None = None
    speaker_seed: int = 0
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
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        precision: ``auto``: bf16 autocast (fp32 master weights) on CUDA, fp32 on the CPU, so that a CPU
            run's arithmetic does not change with the machine it lands on; ``bf16``: bf16 autocast on any
            device (on a CPU with AVX512-BF16 or AMX a step is faster, ``docs/benchmarks.md``; elsewhere
            it is much slower, and the trainer warns); ``fp32``: no autocast anywhere.
    """

    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 4
    seed: int = 0
    log_every: int = 1
    progress: bool = True
    device: str = "auto"
    precision: str = "auto"


PRECISIONS = ("auto", "bf16", "fp32")


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


def config_from_dict(data: dict, origin: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` (method name and options included)."""
    cfg = build(TrainConfig, data, "", origin)
    require(cfg, origin, ("optim.lr", POSITIVE), ("optim.adaptor_lr", POSITIVE), ("optim.weight_decay", NON_NEGATIVE),
            ("optim.warmup_ratio", FRACTION), ("optim.max_grad_norm", NONE_OR_POSITIVE),
            ("loop.max_steps", NONE_OR_AT_LEAST_1), ("loop.batch_size", AT_LEAST_1), ("loop.grad_accum", AT_LEAST_1),
            ("loop.log_every", AT_LEAST_1), ("checkpoint.save_every", NON_NEGATIVE),
            ("checkpoint.keep_last", NON_NEGATIVE), ("data.limit", NONE_OR_AT_LEAST_1),
            ("data.max_response_tokens", NONE_OR_AT_LEAST_1),
            ("data.modality", (lambda v: v in ("speech", "text"), "'speech' or 'text'")),
            ("loop.precision", (lambda v: v in PRECISIONS, " or ".join(PRECISIONS))))
    if cfg.loop.max_steps is None:
        require(cfg, origin, ("loop.epochs", AT_LEAST_1))
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


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of ``cfg`` that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
