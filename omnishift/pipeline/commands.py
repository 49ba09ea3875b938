"""Command line of the pipeline: ``omnishift run EXPERIMENT.yaml`` and ``omnishift demo``."""

from __future__ import annotations

import time
from pathlib import Path


def cmd_run(args) -> int:
    from omnishift.pipeline.config import load_experiment
    from omnishift.pipeline.runner import parse_shard, run_experiment

    cfg = load_experiment(args.experiment, args.overrides)
    out = run_experiment(cfg, redo=args.redo or (), stage=args.stage,
                         shard=parse_shard(args.shard) if args.shard else None)
    print(out.resolve())
    return 0


def cmd_demo(args) -> int:
    """The pipeline at toy scale on the default models and the built-in data (offline)."""
    from omnishift.pipeline.config import load_experiment
    from omnishift.pipeline.runner import run_experiment

    overrides = [f"out_root={args.out_root}"] + list(args.overrides)
    cfg = load_experiment("builtin:demo.yaml", overrides)
    t0 = time.perf_counter()
    out = run_experiment(cfg, redo=args.redo or ())
    minutes = (time.perf_counter() - t0) / 60
    print(f"\ndemo finished in {minutes:.1f} min; report: {Path(out).resolve()}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("run", help="run an experiment (all stages, resumable): data, importance, training, "
                                   "analysis, evaluation, report")
    s.add_argument("experiment", help="experiment YAML, e.g. configs/experiments/cpu_repro.yaml (or builtin:demo.yaml)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. evaluate.batch_size=8 name=try2")
    s.add_argument("--redo", nargs="+", metavar="STAGE", help="run these stages again (drops their DONE marker)")
    s.add_argument("--stage", help="run only this stage")
    s.add_argument("--shard", metavar="I/N", help="with --stage train|importance_after|evaluate: run only units u "
                   "with u %% N == I (no DONE marker); start N such processes, then the plain command finishes "
                   "the stage")
    s.set_defaults(func=cmd_run)
