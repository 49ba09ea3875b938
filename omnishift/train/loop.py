"""What every training loop of omnishift shares: the run folder, resume, the step log, the optimizer.

Stage 1 (:mod:`.trainer`) and adaptor alignment (:mod:`omnishift.align.trainer`) differ in what a
step computes, not in how a run is kept: one rule decides whether a folder is reused, resumed or
refused; a resume continues from the newest checkpoint and drops the log records written after it;
``log.jsonl`` is appended and flushed record by record; checkpoints are written every
``save_every`` steps and pruned; AdamW decays matrices only. Written once here, so a fix to resume
or logging reaches both.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from omnishift.allocator import keep_freed_memory
from omnishift.paths import atomic_write_text, ensure_writable_dir, read_jsonl_tolerant, remove_stale_temps
from omnishift.reuse import reuse_unit
from omnishift.schema import check_same_run
from omnishift.train.checkpoint import LoopState, checkpoint_path, latest_checkpoint, prune_checkpoints


@dataclass(frozen=True)
class RunFolder:
    """A training run's folder: ``checkpoints/``, ``log.jsonl`` and ``final/`` inside ``out_dir``."""

    out_dir: Path

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def log_file(self) -> Path:
        return self.out_dir / "log.jsonl"

    @property
    def final(self) -> Path:
        return self.out_dir / "final"


def open_run(out_dir, config: dict, may_differ: set, inputs: dict, resume: bool, what: str, fix: str,
             resume_hint: str) -> tuple[RunFolder, bool]:
    """Check a run folder before any work: writable, not someone else's run, same inputs on resume.

    Args:
        out_dir: the folder.
        config: the run's config as a dict (compared with a resumed run's ``config.yaml``).
        may_differ: config key paths a resume may change (where and how often it saves and logs).
        inputs: what the folder is made from, by content (:func:`~omnishift.reuse.reuse_unit`).
        resume: continue a run found there.
        what, fix: how errors name the run and its fix; ``resume_hint``: how to resume it.

    Returns:
        ``(run folder, done)``; ``done``: the same inputs already trained ``final/``.
    """
    run = RunFolder(ensure_writable_dir(out_dir, "out_dir"))  # before hours of work, not when it saves
    if not resume and any(p.exists() for p in (run.log_file, run.checkpoints, run.final)):
        raise FileExistsError(f"{run.out_dir} already holds a {what}: resume it ({resume_hint}) or choose a new "
                              "out_dir (out_dir=...)")
    if resume:
        check_same_run(run.out_dir, config, may_differ)
    done = reuse_unit(run.out_dir, inputs, what=what, redo=False, complete=lambda d: run.final.is_dir(), fix=fix)
    return run, bool(done)


def resume_from(run: RunFolder, resume: bool, load: Callable[[Path], LoopState], n_items: int,
                main: bool = True, barrier: Callable[[], None] = lambda: None) -> LoopState:
    """The loop state to start from: fresh, or the newest checkpoint's (``load(path)``), with the log
    records a killed run wrote after it dropped. Half-written checkpoint copies (1.7 GB each for
    Full-FT) go first, removed by the main process; ``barrier`` then waits for it."""
    if main:
        remove_stale_temps(run.checkpoints)
        remove_stale_temps(run.out_dir)
    barrier()
    last = latest_checkpoint(run.checkpoints) if resume else None
    state = LoopState(n_items=n_items)
    if last is not None:
        state = load(last)
        if state.n_items and state.n_items != n_items:
            raise ValueError(f"{last} was trained on {state.n_items} items, this resume has {n_items}; "
                             "resume with the same data")
    if resume and main and run.log_file.is_file():  # a torn last line (killed mid-write) is dropped too
        keep = [r for r in read_jsonl_tolerant(run.log_file) if r["step"] <= state.step]
        atomic_write_text(run.log_file, "".join(json.dumps(r) + "\n" for r in keep))
    return state


class StepLog(contextlib.AbstractContextManager):
    """``log.jsonl`` (append + flush), the progress bar and the checkpoint cadence of one loop.

    Args:
        run: the run folder.
        total, initial: steps of the run and steps already done (the bar starts there).
        desc: the bar's label; ``progress``: show it; ``main``: this process writes.
        sinks: more writers of each logged record (e.g. TensorBoard).
    """

    def __init__(self, run: RunFolder, total: int, initial: int, desc: str, progress: bool = True,
                 main: bool = True, sinks: tuple = ()):
        self.run, self.total, self.main, self.sinks = run, total, main, sinks
        keep_freed_memory()  # the steps reuse their freed tensors' pages (omnishift.allocator says why)
        self.bar = tqdm(total=total, initial=initial, disable=not (progress and main), desc=desc)
        self.file = open(run.log_file, "a", encoding="utf-8") if main else None  # noqa: SIM115 (closed in __exit__)

    def step(self, record: dict, log: bool, **postfix) -> None:
        """Count one step; write ``record`` when ``log`` (and on the last step)."""
        if self.main and (log or record["step"] == self.total):
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            for sink in self.sinks:
                sink.log(record)
        self.bar.set_postfix(**postfix)
        self.bar.update(1)

    def __exit__(self, *exc) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        for sink in self.sinks:
            sink.close()


def maybe_checkpoint(run: RunFolder, step: int, save_every: int, keep_last: int, save: Callable[[Path], None],
                     main: bool = True) -> None:
    """Every ``save_every`` steps: ``save(path)`` (every process calls it: sharded saves are
    collective), then keep the ``keep_last`` newest."""
    if save_every and step % save_every == 0:
        save(checkpoint_path(run.checkpoints, step))
        if main:
            prune_checkpoints(run.checkpoints, keep_last)


def adamw(groups: list[tuple[str, list, float]], weight_decay: float) -> torch.optim.AdamW:
    """AdamW over named ``(name, params, lr)`` groups; weight decay on matrices only (nanoGPT).

    With ``weight_decay > 0`` a group's biases, norm gains and other 1-D tensors go to a sibling
    group ``NAME.no_decay`` at the same LR; with 0 the groups stay one per name, as in runs and
    checkpoints made before the split. Empty groups are dropped.
    """
    out = []
    for name, params, lr in groups:
        if not weight_decay:
            out.append({"params": list(params), "lr": lr, "name": name, "weight_decay": 0.0})
            continue
        out.append({"params": [p for p in params if p.dim() >= 2], "lr": lr, "name": name, "weight_decay": weight_decay})
        out.append({"params": [p for p in params if p.dim() < 2], "lr": lr, "name": f"{name}.no_decay",
                    "weight_decay": 0.0})
    return torch.optim.AdamW([g for g in out if g["params"]], weight_decay=weight_decay)
