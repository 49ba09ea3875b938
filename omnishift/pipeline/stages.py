"""The stages of ``omnishift run``: one table (:data:`STAGES`) of functions ``(ctx, out_dir) -> info``.

Each stage lives in its own module (``data_stage``, ``importance_stages``, ``align_stage``,
``train_stage``, ``evaluate_stage``); this one says, for each, what it makes, which config keys and
earlier stages it reads, and what it reads from outside the run. Later stages read earlier stages'
folders only, so a run needs ``../shared`` (or the network) at most in the ``data`` stage.

A stage is finished when its ``DONE`` marker says so, and the marker is trusted only while what
produced the stage still holds (:mod:`.runner`): the config keys it reads, the content of what it
reads from outside the run (``inputs``), and the outputs of the stages it reads (``after``). Inside
a stage, each unit is reused only by the same rule (:meth:`Context.reuse`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from omnishift.pipeline.align_stage import align_inputs, decode_run_clips, stage_align
from omnishift.pipeline.context import Context
from omnishift.pipeline.data_stage import data_inputs, stage_data
from omnishift.pipeline.evaluate_stage import (copy_unit, eval_settings, evaluate_inputs, stage_ablation,
                                               stage_evaluate, stage_report)
from omnishift.pipeline.importance_stages import (load_trained, stage_change, stage_deactivation,
                                                  stage_deactivation_after, stage_importance, stage_importance_after,
                                                  stage_shift)
from omnishift.pipeline.train_stage import stage_train, train_config, train_inputs, train_overrides

__all__ = ["STAGES", "Stage", "Context", "stage_keys", "load_trained", "train_overrides", "train_config",
           "decode_run_clips", "copy_unit", "eval_settings"]


def model_inputs(ctx: Context) -> dict:
    """The base model's LLM and encoder folders, by content (a stage that loads them reads them)."""
    return {"model": ctx.model_fp(None)}


def _with_model(more: Callable[[Context], dict]) -> Callable[[Context], dict]:
    return lambda ctx: {**model_inputs(ctx), **more(ctx)}


class Stage(NamedTuple):
    """A pipeline stage. ``run(ctx, out) -> info`` does it (``info`` goes into its ``DONE`` marker);
    ``shardable``: its units are independent, so ``--stage S --shard i/n`` may split them across
    processes; ``produces``: what it makes, as the report's overview lists it.

    ``reads``: the experiment-config keys (dotted: ``evaluate.benchmarks``) its outputs depend on,
    None for all of them; ``after``: the stages whose outputs it uses; ``inputs(ctx) -> {name:
    JSON-able}``: what it reads from outside the run, by content (source files, model folders).
    A finished stage is stale when any key it or (transitively) its inputs read has changed
    (:func:`stage_keys`), when an input's content changed, or when a stage in ``after`` has other
    outputs than it read. ``rebuild``: cheap and computed only from earlier stages' outputs, so a
    stale one is simply run again instead of refused.
    """

    run: Callable[[Context, Path], dict | None]
    shardable: bool
    produces: str
    reads: tuple[str, ...] | None = None
    after: tuple[str, ...] = ()
    inputs: Callable[[Context], dict] | None = None
    rebuild: bool = False


#: The stages in run order: the one place a stage's facts live (adding one: a function + a line).
STAGES: dict[str, Stage] = {
    "data": Stage(stage_data, False, "training instructions, held-out set and benchmarks with synthesized speech",
                  ("data", "evaluate.benchmarks", "evaluate.modes"), inputs=data_inputs),
    "importance": Stage(stage_importance, False,
                        "Taylor importance of the base model (text and speech input), eq. 3, Fig. 1",
                        ("model", "importance"), ("data",), model_inputs),
    "deactivation": Stage(stage_deactivation, False, "Table 1", ("model", "deactivation"), ("data", "importance"),
                          model_inputs),
    "align": Stage(stage_align, False, "adaptor alignment (CTC / KD, LLM frozen) before Stage 1", ("model", "align"),
                   ("data",), _with_model(align_inputs)),
    "train": Stage(stage_train, True, "Stage-1 training of every method", ("model", "train"),
                   ("data", "importance", "align"), _with_model(train_inputs)),
    "importance_after": Stage(stage_importance_after, True, "textual importance of every trained model",
                              ("importance",), ("data", "train")),
    "deactivation_after": Stage(stage_deactivation_after, False, "Table 1 on Stage-1 models", ("deactivation",),
                                ("data", "train", "importance_after"), model_inputs),
    "shift": Stage(stage_shift, False, "Fig. 2-3 and shift metrics", ("importance",), ("importance", "importance_after"),
                   rebuild=True),
    "change": Stage(stage_change, False, "Fig. 4", ("importance",), ("importance", "train"), model_inputs, rebuild=True),
    "evaluate": Stage(stage_evaluate, True, "Table 2 (T2T / S2T with No-FT and cascade baselines)", ("evaluate",),
                      ("data", "align", "train"), _with_model(evaluate_inputs)),
    "ablation": Stage(stage_ablation, False, "Table 3 (LoRA rank)", ("ablation", "evaluate"),
                      ("data", "importance", "align", "train"), _with_model(train_inputs)),
    "report": Stage(stage_report, False, "this report", None,
                    ("data", "importance", "deactivation", "align", "train", "importance_after", "deactivation_after",
                     "shift", "change",
                     "evaluate", "ablation"), rebuild=True),
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
