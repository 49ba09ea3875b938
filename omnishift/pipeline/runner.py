"""Run an experiment stage by stage, resumably: ``OUT_ROOT/NAME/STAGE/`` + a ``DONE`` marker each.

A stage is finished when its folder holds ``DONE``, written atomically as the stage's last act,
after every unit under it was checked (:meth:`Context.reuse`). The marker records what produced the
stage: the fingerprint of the config keys it reads, the content fingerprints of what it reads from
outside the run (``Stage.inputs``), and the output fingerprints of the stages it read
(``Stage.after``); and the fingerprint of its own outputs, which later stages record in turn. A
rerun skips a finished stage only while all of that still holds; a stale one is refused by name
(``--redo STAGE`` redoes it, ``--accept-stale`` keeps it) or, for a cheap derived stage (the
report, the figures), simply run again. An unfinished stage resumes its units from what is on disk
(checkpoints, ``items.jsonl``), so a run can span several sessions: kill it, run the same command
again.

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
from omnishift.fingerprint import fingerprint as content_key
from omnishift.paths import atomic_write_text, ensure_writable_dir
from omnishift.reuse import BOOKKEEPING, content_sha256
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
    the config keys that stage's outputs depend on (:func:`stage_keys`)."""
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


#: what a stage's output fingerprint leaves out: resume state that no later stage reads
_NOT_OUTPUTS = BOOKKEEPING | {"checkpoints", "state", "tb", "progress.json"}


def outputs_fingerprint(stage_folder: Path) -> str:
    """Content fingerprint of what a finished stage made (recorded in its marker, read by later ones)."""
    return content_sha256(stage_folder, skip=_NOT_OUTPUTS)


class _Inputs:
    """Each stage's outside inputs, fingerprinted once per run: ``{name: fingerprint}``."""

    def __init__(self, ctx: Context):
        self.ctx, self.memo = ctx, {}

    def __call__(self, stage: str) -> dict:
        if stage not in self.memo:
            f = STAGES[stage].inputs
            self.memo[stage] = {k: content_key(v) for k, v in (f(self.ctx) if f else {}).items()}
        return self.memo[stage]


def why_stale(run_dir: Path, stage: str, marker: dict, config_fp: str, inputs: _Inputs, rerun: set) -> list[str]:
    """Why a finished stage no longer matches what would produce it now ([]: it still does)."""
    why = []
    if marker.get("config") != config_fp:
        why.append(f"the config keys it reads changed (fingerprint {marker.get('config')} then, {config_fp} now)")
    have, want = marker.get("inputs"), inputs(stage)
    if have is None:
        why.append("its marker records no inputs (finished by an older omnishift)")
    elif changed := sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k)):
        why.append(f"the content of what it reads changed: {changed}")
    for dep in STAGES[stage].after:
        if dep in rerun:
            why.append(f"it reads stage {dep}, which runs again")
        elif (marker.get("upstream") or {}).get(dep) != (read_marker(run_dir, dep) or {}).get("outputs"):
            why.append(f"stage {dep} has other outputs than it read")
    return why


def _plan(run_dir: Path, todo: list[str], redo, fps: dict, inputs: _Inputs, accept_stale: bool) -> tuple[set, dict]:
    """Which stages run (unfinished, redone, or stale and cheap to rebuild) and which stale ones are
    kept (``--accept-stale``); raises naming every stale stage otherwise, before anything runs."""
    rerun, kept, refused = set(), {}, {}
    for s in todo:
        marker = read_marker(run_dir, s)
        if s in redo or marker is None:
            rerun.add(s)
            continue
        why = why_stale(run_dir, s, marker, fps[s], inputs, rerun)
        if why and STAGES[s].rebuild:
            rerun.add(s)
        elif why:
            (kept if accept_stale else refused)[s] = why
    if refused:
        names = list(refused)
        raise ValueError(f"{run_dir}: stages {names} were finished from other inputs than they would read now ("
                         + "; ".join(f"{s}: {', '.join(w)}" for s, w in refused.items())
                         + f"); rerun them with --redo {' '.join(names)}, keep their outputs with --accept-stale, "
                         "or give the run a new name=")
    return rerun, kept


def run_experiment(cfg: ExperimentConfig, redo: list[str] | tuple = (), hook: Callable | None = None,
                   stream=sys.stderr, stage: str | None = None, shard: tuple[int, int] | None = None,
                   accept_stale: bool = False) -> Path:
    """Run (or continue) every stage of ``cfg``; returns ``run_dir/report.html`` (or the run folder).

    Args:
        cfg: the experiment (:func:`omnishift.pipeline.config.load_experiment`).
        redo: stage names run again even if finished; their units made from other inputs than
            now are emptied and redone, those made from the same inputs are reused.
        hook: ``hook(event, stage, detail)``, see :class:`Progress`.
        stream: progress lines (None: silent).
        stage: run only this stage (skipped if finished and current, like any other).
        accept_stale: keep finished stages that no longer match what would produce them (default:
            refuse, naming them and why, before anything runs).
        shard: ``(i, n)`` with ``stage`` in :data:`SHARDABLE`: run only this process's share of
            the stage's units and write no ``DONE`` marker; n processes (e.g. ``--shard 0/2`` and
            ``--shard 1/2``, single-threaded each) split the stage, and a plain run afterwards
            finds their units on disk and finishes it. Evaluation units whose model is still
            training are skipped and listed.

    Raises:
        ValueError: an unknown stage in ``redo`` or ``stage``, ``shard`` without a shardable
            ``stage``, stale finished stages; errors of the stages themselves (a stage whose
            inputs are missing names the stage to run first; a unit made from other inputs outside
            ``--redo`` names what changed).
    """
    stages = cfg.stage_list()
    for s in redo:
        if s not in STAGES:
            raise ValueError(f"--redo: unknown stage {s!r}; stages are {list(STAGES)}")
    if stage is not None and stage not in stages:
        raise ValueError(f"--stage {stage!r} is not a stage of this experiment; its stages are {stages}")
    if shard is not None and stage not in SHARDABLE:
        raise ValueError(f"--shard needs --stage with one of {list(SHARDABLE)} (stages made of independent units)")
    run_dir, todo = cfg.run_dir, [stage] if stage else stages
    fps = {s: fingerprint(cfg, s) for s in stages}
    progress = Progress(run_dir, stages, hook, stream)
    ctx = Context(cfg, run_dir, progress, shard=shard, redo=redo)
    inputs = _Inputs(ctx)
    rerun, kept = _plan(run_dir, todo, set(redo), fps, inputs, accept_stale)
    ensure_writable_dir(run_dir, "out_root/name")
    atomic_write_text(run_dir / "experiment.yaml", dump_experiment(cfg))
    atomic_write_text(run_dir / "stages.json", json.dumps({s: STAGES[s].produces for s in stages}, indent=2) + "\n")
    if kept and stream is not None:
        print(f"warning: keeping stale stages {list(kept)} (--accept-stale): {kept}", file=stream, flush=True)
    for st in todo:
        if st not in rerun:
            progress.skipped(st, read_marker(run_dir, st))
            continue
        _run_stage(ctx, st, fps[st], inputs)
        if shard is not None:
            return run_dir
    html = run_dir / "report.html"
    if html.is_file():
        if stream is not None:
            print(f"report: {html.resolve()}", file=stream, flush=True)
        return html
    return run_dir


def _run_stage(ctx: Context, st: str, config_fp: str, inputs: _Inputs) -> None:
    """Run one stage; unless sharded, write its marker with what produced it and what it made."""
    out = stage_dir(ctx.run_dir, st)
    (out / DONE).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    ctx.stage = st
    read_now = inputs(st)  # what it reads from outside the run, before it reads it
    ctx.progress.stage_start(st)
    t0 = time.perf_counter()
    info = STAGES[st].run(ctx, out) or {}
    seconds = time.perf_counter() - t0
    stream = ctx.progress.stream
    if ctx.shard is not None:  # a share of the units only: the plain run writes the marker
        if stream is not None:
            print(f"shard {ctx.shard[0]}/{ctx.shard[1]} of stage {st} finished in {_fmt_s(seconds)}; run without "
                  "--shard to finish the stage", file=stream, flush=True)
        return
    upstream = {d: (read_marker(ctx.run_dir, d) or {}).get("outputs") for d in STAGES[st].after}
    atomic_write_text(out / DONE, json.dumps({
        "stage": st, "finished": _dt.datetime.now().isoformat(timespec="seconds"), "seconds": round(seconds, 2),
        "config": config_fp, "inputs": read_now, "upstream": upstream, "outputs": outputs_fingerprint(out),
        "produces": STAGES[st].produces, **info}, indent=2, default=str) + "\n")
    ctx.progress.stage_done(st, seconds)
