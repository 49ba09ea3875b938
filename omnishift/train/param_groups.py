"""Optimizer parameter groups and the groups every training method starts from.

Kept apart from the method registry (:mod:`.methods`) so that a method defined in its own file
(:mod:`.region_freeze`) imports these without importing the registry that imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ParamGroup:
    """One optimizer parameter group.

    Args:
        name: shown in logs and kept in the optimizer's ``param_groups`` (``"llm.layer.3"``).
        params: the parameters (each in exactly one group).
        lr_scale: multiplies the base LR.
        lr_key: which base LR: ``"lr"`` (LLM) or ``"adaptor_lr"``.
        fixed: ``{index into params: flat element indices}`` that must not change: the trainer
            zeroes their gradient before clipping and writes their values back after every
            optimizer step, so they are bitwise fixed whatever AdamW's decay or moments do.
    """

    name: str
    params: list[torch.nn.Parameter]
    lr_scale: float = 1.0
    lr_key: str = "lr"
    fixed: dict[int, torch.Tensor] = field(default_factory=dict)


@dataclass
class NoOptions:
    """Methods without options."""


def adaptor_group(model) -> ParamGroup:
    """The adaptor, trained fully at ``adaptor_lr`` by every method (it starts from random)."""
    model.adaptor.requires_grad_(True)
    return ParamGroup("adaptor", list(model.adaptor.parameters()), lr_key="adaptor_lr")


def setup_full(model, options: NoOptions) -> list[ParamGroup]:
    """Full-FT: adaptor + all LLM parameters (tied embeddings are one tensor, listed once)."""
    model.llm.requires_grad_(True)
    return [adaptor_group(model), ParamGroup("llm", list(model.llm.parameters()))]
