"""Command line of the pipeline: ``omnishift run EXPERIMENT.yaml`` and ``omnishift demo``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omnishift.models.encoder import SAMPLE_RATE
from omnishift.schema import positive_int


def cmd_run(args) -> int:
    from omnishift.pipeline.config import load_experiment
    from omnishift.pipeline.runner import parse_shard, run_experiment

    cfg = load_experiment(args.experiment, args.overrides)
    out = run_experiment(cfg, redo=args.redo or (), stage=args.stage,
                         shard=parse_shard(args.shard) if args.shard else None, accept_stale=args.accept_stale)
    print(out.resolve())
    return 0


DEMO_QUESTIONS = [
    ("demo_1", "What is the capital of France?", ["Paris"]),
    ("demo_2", "How many legs does a spider have?", ["eight", "8"]),
]


def cmd_demo(args) -> int:
    """The pipeline at toy scale on the default models and the built-in data (offline);
    ``--quick``: only two synthesized questions answered from text and speech, no training."""
    if args.quick:
        return cmd_demo_quick(args)
    from omnishift.pipeline.config import load_experiment
    from omnishift.pipeline.runner import run_experiment

    overrides = [f"out_root={args.out_root}"] + list(args.overrides)
    cfg = load_experiment("builtin:demo.yaml", overrides)
    t0 = time.perf_counter()
    out = run_experiment(cfg, redo=args.redo or ())
    minutes = (time.perf_counter() - t0) / 60
    print(f"\ndemo finished in {minutes:.1f} min; report: {Path(out).resolve()}")
    return 0


def cmd_demo_quick(args) -> int:
    """Fast path: default models, two synthesized questions, answered from text and from speech."""
    from omnishift.data.synth import SynthConfig, synthesize
    from omnishift.models.defaults import prepare_default_models
    from omnishift.models.processor import s2t_prompt, t2t_prompt
    from omnishift.models.speech_llm import SpeechLLM, SpeechLLMConfig

    timings = {}
    t0 = time.perf_counter()
    prep = prepare_default_models()
    timings["prepare_models_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    model = SpeechLLM.from_config(SpeechLLMConfig(frame_policy=args.frame_policy))
    timings["load_models_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    audios = [synthesize(q, SynthConfig()) for _, q, _ in DEMO_QUESTIONS]
    timings["synthesize_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    text_answers = model.answer([t2t_prompt(q) for _, q, _ in DEMO_QUESTIONS], max_new_tokens=args.max_new_tokens)
    timings["answer_text_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    speech_answers = model.answer(
        [s2t_prompt()] * len(audios), audios, max_new_tokens=args.max_new_tokens
    )
    timings["answer_speech_s"] = round(time.perf_counter() - t0, 2)
    rows = []
    for (qid, q, refs), audio, ta, sa in zip(DEMO_QUESTIONS, audios, text_answers, speech_answers):
        n_emb = model.processor.frame_policy.num_embeddings(len(audio))
        rows.append({"id": qid, "question": q, "references": refs, "audio_s": round(len(audio) / SAMPLE_RATE, 2),
                     "speech_embeddings": n_emb, "text_answer": ta, "speech_answer": sa})
        print(f"\n[{qid}] {q}  ({len(audio) / SAMPLE_RATE:.2f} s of speech -> {n_emb} embeddings)")
        print(f"  from text  : {ta}")
        print(f"  from speech: {sa}   (untrained adaptor: speech answers are not meaningful yet)")
    result = {"models": {k: v["path"] for k, v in prep.items()}, "timings": timings, "items": rows}
    if args.out:
        from omnishift.paths import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print("\n" + json.dumps({"timings": timings}, indent=2))
    return 0


def register(commands) -> None:
    """Register ``run`` and ``demo``."""
    s = commands.add_parser("run", help="run an experiment (all stages, resumable): data, importance, training, "
                                   "analysis, evaluation, report")
    s.add_argument("experiment", help="experiment YAML, e.g. configs/experiments/cpu_repro.yaml (or builtin:demo.yaml)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. evaluate.batch_size=8 name=try2")
    s.add_argument("--redo", nargs="+", metavar="STAGE", help="run these stages again (drops their DONE marker)")
    s.add_argument("--stage", help="run only this stage")
    s.add_argument("--accept-stale", action="store_true", help="keep finished stages made with another config "
                                                               "(default: refuse and name them)")
    s.add_argument("--shard", metavar="I/N", help="with --stage train|importance_after|evaluate: run only units u "
                   "with u %% N == I (no DONE marker); start N such processes, then the plain command finishes "
                   "the stage")
    s.set_defaults(func=cmd_run)

    s = commands.add_parser("demo", help="the whole pipeline at toy scale on the default models and built-in data "
                                    "(about 4 min on 2 CPU cores, see README); prints the report's path")
    s.add_argument("overrides", nargs="*", help="key=value overrides of the demo experiment (builtin:demo.yaml)")
    s.add_argument("--out-root", default="runs", help="parent of the run folder (default: runs -> runs/demo)")
    s.add_argument("--redo", nargs="+", metavar="STAGE", help="run these stages again")
    s.add_argument("--quick", action="store_true",
                   help="fast path: only answer two synthesized questions from text and speech (no training)")
    s.add_argument("--frame-policy", choices=["trim", "clip", "pad30"], default="trim", help="--quick only")
    s.add_argument("--max-new-tokens", type=positive_int, default=32, help="--quick only")
    s.add_argument("--out", type=Path, help="--quick only: also write the result as JSON here")
    s.set_defaults(func=cmd_demo)
