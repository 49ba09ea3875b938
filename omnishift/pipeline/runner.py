"""Run an experiment stage by stage, resumably: ``OUT_ROOT/NAME/STAGE/`` + a ``DONE`` marker each.

A stage is finished when its folder holds ``DONE`` (JSON: when, how long, what it made), written
atomically as the stage's last act. A rerun skips finished stages and calls an unfinished one
again; every stage is idempotent and resumes its own units (a scored modality, a trained method,
an evaluated benchmark × mode) from what is on disk, and training and evaluation resume inside a
unit too (checkpoints, ``items.jsonl``). So a run can span several sittings: kill it, run the same
command again.

Progress goes to stderr (stage i/N, unit i/n with an ETA from the units done so far) and to
``NAME/progress.json``; the trainer's and evaluator's tqdm bars show the steps inside a unit.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Callable

from omnishift import runs
from omnishift.paths import atomic_write_text
from omnishift.runs import DONE
from omnishift.pipeline.config import ExperimentConfig, dump_experiment
from omnishift.pipeline.stages import STAGES, Context, stage_keys



def _fmt_s(seconds: float) -> str:
    return str(_dt.timedelta(seconds=int(round(seconds))))


class Progress:
    """Prints where a run is and mirrors it to ``progress.json``; ``hook`` sees every event.

    Args:
        run_dir: the run folder.
        stages: the stages of this run, in order.
        hook: ``hook(event, stage, detail)`` called on ``stage_start``, ``stage_done`` and
            ``step`` events (tests raise from it to simulate a kill).
        stream: where lines go (None: silent).
    """

    def __init__(self, run_dir: Path, stages: list[str], hook: Callable | None = None, stream=sys.stderr):
        self.run_dir, self.stages, self.hook, self.stream = Path(run_dir), stages, hook, stream
        self.t_run = time.perf_counter()
        self.stage, self.t_stage, self.t_last, self.units = None, None, None, {}

    def _say(self, line: str) -> None:
        if self.stream is not None:
            print(f"[omnishift run {_fmt_s(time.perf_counter() - self.t_run)}] {line}", file=self.stream, flush=True)

    def _write(self, **extra) -> None:
        doc = {"stage": self.stage, "stage_index": self.stages.index(self.stage) + 1 if self.stage in self.stages else None,
               "stages": len(self.stages), "elapsed_s": round(time.perf_counter() - self.t_run, 1), **extra}
        atomic_write_text(self.run_dir / "progress.json", json.dumps(doc) + "\n")

    def _call(self, event: str, detail: dict) -> None:
        if self.hook is not None:
            self.hook(event, self.stage, detail)

    def skipped(self, stage: str, marker: dict) -> None:
        self._say(f"stage {self.stages.index(stage) + 1}/{len(self.stages)} {stage}: done "
                  f"({marker.get('finished', '?')}), skipped")

    def stage_start(self, stage: str) -> None:
        self.stage, self.t_stage, self.units = stage, time.perf_counter(), {}
        self.t_last = self.t_stage
        self._say(f"stage {self.stages.index(stage) + 1}/{len(self.stages)} {stage}: started")
        self._write(state="running")
        self._call("stage_start", {})

    def stage_done(self, stage: str, seconds: float) -> None:
        self._say(f"stage {self.stages.index(stage) + 1}/{len(self.stages)} {stage}: finished in {_fmt_s(seconds)}")
        self._write(state="finished" if stage == self.stages[-1] else "running")
        self._call("stage_done", {"seconds": seconds})

    def step(self, task: str, i: int, n: int, note: str = "") -> None:
        """Unit ``i`` of ``n`` of ``task`` is done (``i`` counts from 1); prints it with an ETA."""
        now = time.perf_counter()
        t0, first = self.units.setdefault(task, (self.t_last or now, i - 1))  # its first unit began at the last event
        self.t_last = now
        done = i - first
        eta = (now - t0) / done * (n - i) if done > 0 else None
        self._say(f"  {self.stage} | {task}: {i}/{n}" + (f" {note}" if note else "")
                  + (f" | ETA {_fmt_s(eta)}" if eta is not None and i < n else ""))
        self._write(state="running", task=task, step=i, of=n, eta_s=None if eta is None else round(eta, 1))
        self._call("step", {"task": task, "step": i, "of": n})


def stage_dir(run_dir: Path, stage: str) -> Path:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {list(STAGES)}")
    return Path(run_dir) / stage


def read_marker(run_dir: Path, stage: str) -> dict | None:
    """The ``DONE`` marker of ``stage`` in ``run_dir`` (None when the stage is not finished)."""
    return runs.read_marker(stage_dir(run_dir, stage).parent, stage)


def _config_dict(cfg: ExperimentConfig) -> dict:
    import yaml

    d = yaml.safe_load(dump_experiment(cfg))
    d.pop("stages", None)  # which stages run, not what they compute
    return d


def _hash(obj) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(cfg: ExperimentConfig, stage: str | None = None) -> str:
    """Hash of what the experiment computes (the report title excluded), or, with ``stage``, of
    the config keys that stage's outputs depend on (:func:`stage_keys`). The whole-experiment hash
    is also what ``DONE`` markers carried before per-stage fingerprints: still a match when the
    config is unchanged since."""
    d = _config_dict(cfg)
    keys = stage_keys(stage) if stage is not None else None
    if keys is None:
        if stage != "report":
            d.pop("report", None)
        return _hash(d)

    def get(key: str):
        node = d
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    return _hash({k: get(k) for k in sorted(keys)})


# stages made of independent units: a method (train, importance_after), a model x benchmark x mode (evaluate)
SHARDABLE = tuple(name for name, s in STAGES.items() if s.shardable)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (raises a ValueError naming the expected form)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/2 and 1/2 in two processes") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def run_experiment(cfg: ExperimentConfig, redo: list[str] | tuple = (), hook: Callable | None = None,
                   stream=sys.stderr, stage: str | None = None, shard: tuple[int, int] | None = None,
                   accept_stale: bool = False) -> Path:
    """Run (or continue) every stage of ``cfg``; returns ``run_dir/report.html`` (or the run folder).

    Args:
        cfg: the experiment (:func:`omnishift.pipeline.config.load_experiment`).
        redo: stage names whose ``DONE`` marker is dropped first, so they run again (their units
            that are complete on disk are still reused: delete a unit's folder to recompute it).
        hook: ``hook(event, stage, detail)``, see :class:`Progress`.
        stream: progress lines (None: silent).
        stage: run only this stage (skipped if finished, like any other).
        accept_stale: keep finished stages whose ``DONE`` marker records another experiment config
            (default: refuse, naming them, since their outputs no longer match ``experiment.yaml``).
        shard: ``(i, n)`` with ``stage`` in :data:`SHARDABLE`: run only this process's share of
            the stage's units and write no ``DONE`` marker; n processes (e.g. ``--shard 0/2`` and
            ``--shard 1/2``, single-threaded each) split the stage, and a plain run afterwards
            finds their units on disk and finishes it. Evaluation units whose model is still
            training are skipped and listed.

    Raises:
        ValueError: an unknown stage in ``redo`` or ``stage``, ``shard`` without a shardable
            ``stage``; errors of the stages themselves (a stage whose inputs are missing names
            the stage to run first).
    """
    stages = cfg.stage_list()
    for s in redo:
        if s not in STAGES:
            raise ValueError(f"--redo: unknown stage {s!r}; stages are {list(STAGES)}")
    if stage is not None and stage not in stages:
        raise ValueError(f"--stage {stage!r} is not a stage of this experiment; its stages are {stages}")
    if shard is not None and stage not in SHARDABLE:
        raise ValueError(f"--shard needs --stage with one of {list(SHARDABLE)} (stages made of independent units)")
    run_dir = cfg.run_dir
    fps = {s: fingerprint(cfg, s) for s in stages}
    legacy = fingerprint(cfg)  # markers written before per-stage fingerprints
    stale = [s for s in stages if s not in redo
             and (read_marker(run_dir, s) or {}).get("config") not in (None, fps[s], legacy)]
    if stale and not accept_stale:
        was = {s: read_marker(run_dir, s).get("config") for s in stale}
        raise ValueError(f"{run_dir}: stages {stale} were finished with another experiment config (fingerprints "
                         f"{was} then, {({s: fps[s] for s in stale})} now); rerun them with --redo {' '.join(stale)}, "
                         "keep their outputs with --accept-stale, or give the run a new name=")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "experiment.yaml", dump_experiment(cfg))
    atomic_write_text(run_dir / "stages.json", json.dumps({s: STAGES[s].produces for s in stages}, indent=2) + "\n")
    progress = Progress(run_dir, stages, hook, stream)
    ctx = Context(cfg, run_dir, progress, shard=shard)
    for s in redo:
        (stage_dir(run_dir, s) / DONE).unlink(missing_ok=True)
    if stale and stream is not None:
        print(f"warning: keeping stages {stale}, finished with another experiment config (--accept-stale)",
              file=stream, flush=True)
    for st in [stage] if stage else stages:
        marker = read_marker(run_dir, st)
        if marker is not None:
            progress.skipped(st, marker)
            continue
        out = stage_dir(run_dir, st)
        out.mkdir(parents=True, exist_ok=True)
        progress.stage_start(st)
        t0 = time.perf_counter()
        info = STAGES[st].run(ctx, out) or {}
        seconds = time.perf_counter() - t0
        if shard is not None:  # a share of the units only: the plain run writes the marker
            if stream is not None:
                print(f"shard {shard[0]}/{shard[1]} of stage {st} finished in {_fmt_s(seconds)}; run without "
                      "--shard to finish the stage", file=stream, flush=True)
            return run_dir
        atomic_write_text(out / DONE, json.dumps({
            "stage": st, "finished": _dt.datetime.now().isoformat(timespec="seconds"),
            "seconds": round(seconds, 2), "config": fps[st], "produces": STAGES[st].produces, **info}, indent=2, default=str) + "\n")
        progress.stage_done(st, seconds)
    html = run_dir / "report.html"
    if html.is_file():
        if stream is not None:
            print(f"report: {html.resolve()}", file=stream, flush=True)
        return html
    return run_dir
