"""Training methods: which parameters of the speech LLM train, and at what learning rate.

One registry table, :data:`METHODS`, maps a method name (``method.name`` in the YAML) to a
:class:`Method`: a setup function and the dataclass of its options (``method.options``). The
setup function receives a :class:`~omnishift.models.speech_llm.SpeechLLM` whose parameters the
trainer has all frozen, turns ``requires_grad`` on for what it trains (wrapping ``model.llm`` if
it needs to, as LoRA does), and returns the optimizer parameter groups as :class:`ParamGroup`.

* ``full`` (Full-FT): adaptor at adaptor_lr + every LLM parameter at lr.
* ``layer_lr`` (Layer-LR, paper 3.1.1): as full, decoder layer i at lr·coef(i) from an eq. 3 JSON.
* ``lora`` (LoRA, paper 3.1.2): adaptor + LoRA on q/k/v/o/gate/up/down_proj; base weights frozen.
* ``frozen``: adaptor only; the LLM stays the base model.
* ``text_control``: as full, on the same instructions given as *text* (no adaptor in the path), so
  T2T(text control) - T2T(speech method) is what speech, not instruction tuning, did to the LLM.
* ``region_freeze``: as full, but the top ``fraction`` text-important entries stay bitwise fixed
  (:mod:`.region_freeze`).

Adding a method is one file and one line: write ``omnishift/train/my_method.py`` with an options
dataclass and ``setup(model, options) -> list[ParamGroup]`` (see :mod:`.region_freeze`), and add
``"my_method": Method(my_method.setup, my_method.Options, "My method")`` to :data:`METHODS`. The config loader
then validates its options and the trainer builds its optimizer with no further change. Your file
takes ``ParamGroup`` and the shared groups from :mod:`.param_groups` (never from this module, which
imports your file).

Layer-LR outside the decoder layers: eq. 3 defines coefficients only for decoder layers (I_layer
sums layer parameters only), so embeddings, the final norm and an untied lm_head keep scale
``other_scale`` = 1.0, i.e. they train exactly as under Full-FT. "Nearest layer" is ill-defined
for the tied embedding of SmolLM2 / Llama-3.2-1B, which is both the input table (next to layer 0)
and the output head (next to the last layer); 1.0 also keeps the Layer-LR vs Full-FT comparison
about the layers eq. 3 actually scales. ``other_scale`` lets an experiment choose otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from omnishift.importance.scores import MODULES, parse_param_name
from omnishift.schema import ConfigError, build
from omnishift.train import region_freeze
from omnishift.train.param_groups import NoOptions, ParamGroup, adaptor_group, setup_full


class Method(NamedTuple):
    """A registry entry.

    Args:
        setup: ``setup(model, options) -> list[ParamGroup]``.
        options: its options dataclass (``method.options``).
        display: the row name tables and figures show for it.
        inputs: ``{option field: artifact}`` the experiment pipeline fills in from its earlier stages;
            artifacts: ``layer_lr_coefficients`` (eq. 3 JSON of the base model's text importance),
            ``text_scores`` (that importance's score folder).
        changes_llm: False when the LLM stays the base model (nothing to draw in Fig. 4).
        full_llm: every LLM parameter trains at the base LR (Full-FT: the model of the paper's Fig. 2).
        modality: what the instructions are given as, if not ``data.modality`` (the text control: text).
    """

    setup: Callable[[Any, Any], list[ParamGroup]]
    options: type
    display: str = ""
    inputs: dict = {}
    changes_llm: bool = True
    full_llm: bool = False
    modality: str | None = None


def setup_frozen(model, options: NoOptions) -> list[ParamGroup]:
    """Adaptor only: the LLM stays exactly the base model."""
    return [adaptor_group(model)]


def setup_text_control(model, options: NoOptions) -> list[ParamGroup]:
    """Every LLM parameter, as Full-FT; no adaptor group, since text instructions never reach it."""
    model.llm.requires_grad_(True)
    return [ParamGroup("llm", list(model.llm.parameters()))]


@dataclass
class LayerLROptions:
    """Args: coefficients: eq. 3 JSON from ``omnishift importance lr`` (``{"coefficients": {"0": c0, ...}}``);
    other_scale: LR scale of parameters outside decoder layers (embeddings, final norm, lm_head)."""

    coefficients: str
    other_scale: float = 1.0


def load_coefficients(path: str | Path) -> dict[int, float]:
    """Read the per-layer coefficients of an eq. 3 JSON written by ``write_layer_lr``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make it with `omnishift importance lr` from TEXT scores of the base model")
    doc = json.loads(path.read_text())
    if "coefficients" not in doc:
        raise ValueError(f"{path}: no 'coefficients' mapping (expected the eq. 3 JSON of write_layer_lr)")
    return {int(k): float(v) for k, v in doc["coefficients"].items()}


def setup_layer_lr(model, options: LayerLROptions) -> list[ParamGroup]:
    """Layer-LR (paper eq. 3): one group per decoder layer at ``lr·coef(i)``; the rest at ``other_scale``."""
    coef = load_coefficients(options.coefficients)
    model.llm.requires_grad_(True)
    by_layer: dict[int, list] = {}
    other = []
    for name, p in model.llm.named_parameters():
        layer = parse_param_name(name).layer
        (other if layer is None else by_layer.setdefault(layer, [])).append(p)
    if sorted(coef) != sorted(by_layer):
        raise ValueError(f"{options.coefficients}: coefficients for layers {sorted(coef)} but the LLM has layers "
                         f"{sorted(by_layer)}; compute eq. 3 from scores of this same base LLM")
    groups = [adaptor_group(model)]
    groups += [ParamGroup(f"llm.layer.{i}", by_layer[i], lr_scale=coef[i]) for i in sorted(by_layer)]
    if other:
        groups.append(ParamGroup("llm.other", other, lr_scale=options.other_scale))
    return groups


@dataclass
class LoraOptions:
    """Args: r: rank (paper: 8 for 1B, 16 for 8B); alpha: scaling α (None: 2r, as in the paper);
    dropout: LoRA dropout; target_modules: module names wrapped (default: all attention + MLP)."""

    r: int = 8
    alpha: int | None = None
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: list(MODULES))


def setup_lora(model, options: LoraOptions) -> list[ParamGroup]:
    """LoRA (paper 3.1.2): wrap ``model.llm`` with PEFT; only the LoRA matrices of the LLM train."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model.llm, PeftModel):
        raise ValueError("the LLM already carries a PEFT adapter; start LoRA from a full (or base) LLM")
    cfg = LoraConfig(r=options.r, lora_alpha=options.alpha or 2 * options.r, lora_dropout=options.dropout,
                     target_modules=list(options.target_modules), task_type="CAUSAL_LM")
    model.llm = get_peft_model(model.llm, cfg)
    named = [(n, p) for n, p in model.llm.named_parameters() if p.requires_grad]
    stray = [n for n, _ in named if "lora_" not in n]
    if stray:
        raise RuntimeError(f"PEFT left non-LoRA LLM parameters trainable (e.g. {stray[0]})")
    return [adaptor_group(model), ParamGroup("llm.lora", [p for _, p in named])]


def parse_options(name: str, options: dict | None, origin: str = "config"):
    """Validate ``method.options`` for method ``name``; returns its options dataclass."""
    if name not in METHODS:
        raise ConfigError(f"{origin}: unknown method.name {name!r}; valid methods: {sorted(METHODS)}")
    return build(METHODS[name].options, options or {}, "method.options", origin)


def setup_method(model, name: str, options: dict | None) -> list[ParamGroup]:
    """Freeze everything, then let method ``name`` enable and group what it trains.

    Returns:
        The groups; every trainable parameter is in exactly one of them.
    """
    opts = parse_options(name, options)
    model.requires_grad_(False)
    groups = METHODS[name].setup(model, opts)
    seen = set()
    for g in groups:
        for p in g.params:
            if id(p) in seen:
                raise RuntimeError(f"method {name}: a parameter is in two groups (second: {g.name})")
            seen.add(id(p))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if trainable != seen:
        raise RuntimeError(f"method {name}: {len(trainable - seen)} trainable parameters are in no group and "
                           f"{len(seen - trainable)} grouped ones are frozen")
    return groups


#: The registry: method name -> Method(setup, options dataclass).
METHODS: dict[str, Method] = {
    "full": Method(setup_full, NoOptions, "Full-FT", full_llm=True),
    "layer_lr": Method(setup_layer_lr, LayerLROptions, "Layer-LR", inputs={"coefficients": "layer_lr_coefficients"}),
    "lora": Method(setup_lora, LoraOptions, "LoRA"),
    "frozen": Method(setup_frozen, NoOptions, "Frozen LLM", changes_llm=False),
    "text_control": Method(setup_text_control, NoOptions, "Text control", modality="text"),
    "region_freeze": Method(region_freeze.setup, region_freeze.Options, "Region-freeze", inputs={"scores": "text_scores"}),
}
