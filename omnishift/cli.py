"""``omnishift`` command line: prepare models, synthesize speech, ask questions, run experiments and the demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def cmd_models(args) -> int:
    from omnishift.models.defaults import prepare_default_models

    if args.action == "prepare":
        print(json.dumps(prepare_default_models(force=args.force), indent=2))
    return 0


def cmd_synth(args) -> int:
    from omnishift.data.synth import SynthConfig, synth_manifest

    cfg = SynthConfig(voice=args.voice, rate=args.rate, pitch=args.pitch)
    out = synth_manifest(args.input, args.out_dir, cfg, text_field=args.text_field, overwrite=args.overwrite)
    print(out)
    return 0


def cmd_ask(args) -> int:
    from omnishift.models.processor import s2t_prompt, t2t_prompt

    if bool(args.text) == bool(args.audio):
        raise SystemExit("omnishift ask: give exactly one of --text or --audio")
    from omnishift.models.speech_llm import load_speech_llm

    m = load_speech_llm(args.model)
    if args.text:
        answer = m.answer([t2t_prompt(args.text) if args.instruction else args.text], max_new_tokens=args.max_new_tokens)
    else:
        from omnishift.data.audio import load_audio

        audio = load_audio(args.audio, item=args.audio)
        answer = m.answer([s2t_prompt(m.config.placeholder)], [audio], max_new_tokens=args.max_new_tokens)
    print(answer[0])
    return 0


def cmd_train(args) -> int:
    from omnishift.train.config import load_config
    from omnishift.train.trainer import train

    print(train(load_config(args.config, args.overrides), resume=args.resume))
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        # under `accelerate launch`: tear the process group down before the interpreter exits, or a
        # rank can abort in gloo's thread teardown ("terminate called without an active exception",
        # seen on a loaded 2-core machine) after the run has finished and saved
        tdist.barrier()
        tdist.destroy_process_group()
    return 0


DEMO_QUESTIONS = [
    ("demo_1", "What is the capital of France?", ["Paris"]),
    ("demo_2", "How many legs does a spider have?", ["eight", "8"]),
]


def cmd_demo(args) -> int:
    """``omnishift demo``: the whole pipeline at toy scale (``--quick``: two questions, no training)."""
    if not args.quick:
        from omnishift.pipeline.commands import cmd_demo as run_demo

        return run_demo(args)
    return cmd_demo_quick(args)


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
        rows.append({"id": qid, "question": q, "references": refs, "audio_s": round(len(audio) / 16000, 2),
                     "speech_embeddings": n_emb, "text_answer": ta, "speech_answer": sa})
        print(f"\n[{qid}] {q}  ({len(audio) / 16000:.2f} s of speech -> {n_emb} embeddings)")
        print(f"  from text  : {ta}")
        print(f"  from speech: {sa}   (untrained adaptor: speech answers are not meaningful yet)")
    result = {"models": {k: v["path"] for k, v in prep.items()}, "timings": timings, "items": rows}
    if args.out:
        from omnishift.paths import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print("\n" + json.dumps({"timings": timings}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omnishift",
        description="Where speech fine-tuning makes an LLM forget text, and how to prevent it.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("models", help="prepare the embedded default models (SmolLM2, Whisper tiny.en)")
    s.add_argument("action", choices=["prepare"])
    s.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("synth", help="synthesize a JSONL manifest's prompts to 16 kHz WAVs (eSpeak NG)")
    s.add_argument("input", help="JSONL with id and text fields")
    s.add_argument("out_dir", help="folder for wavs/ and manifest.jsonl")
    s.add_argument("--voice", default="en-us")
    s.add_argument("--rate", type=int, default=175, help="words per minute")
    s.add_argument("--pitch", type=int, default=50)
    s.add_argument("--text-field", default="text", help="field to speak (e.g. instruction)")
    s.add_argument("--overwrite", action="store_true", help="re-synthesize existing WAVs")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("ask", help="answer one question from text or from a WAV file")
    s.add_argument("--text", help="question as text")
    s.add_argument("--audio", help="question as an audio file")
    s.add_argument("--model", help="speech-LLM folder (default: base models, untrained adaptor)")
    s.add_argument("--no-instruction", dest="instruction", action="store_false",
                   help="send --text as is, without the LLaMA-Omni answer instruction")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.set_defaults(func=cmd_ask)

    from omnishift.evaluate.commands import add_parser as add_evaluate

    add_evaluate(sub)

    s = sub.add_parser("train", help="Stage-1 speech training (full, layer_lr, lora, frozen, region_freeze)")
    s.add_argument("config", help="YAML config, e.g. configs/default/lora.yaml")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=1e-4 loop.max_steps=10")
    s.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    s.set_defaults(func=cmd_train)

    from omnishift.align.commands import add_parser as add_align

    add_align(sub)

    from omnishift.importance.commands import add_parser as add_importance

    add_importance(sub)

    from omnishift.report.commands import add_parser as add_report
    from omnishift.report.commands import add_report_parser

    add_report(sub)
    add_report_parser(sub)

    from omnishift.pipeline.commands import add_parser as add_pipeline

    add_pipeline(sub)

    s = sub.add_parser("demo", help="the whole pipeline at toy scale on the default models and built-in data "
                                    "(minutes on 2 CPU cores, see README); prints the report's path")
    s.add_argument("overrides", nargs="*", help="key=value overrides of the demo experiment (builtin:demo.yaml)")
    s.add_argument("--out-root", default="runs", help="parent of the run folder (default: runs -> runs/demo)")
    s.add_argument("--redo", nargs="+", metavar="STAGE", help="run these stages again")
    s.add_argument("--quick", action="store_true",
                   help="fast path: only answer two synthesized questions from text and speech (no training)")
    s.add_argument("--frame-policy", choices=["trim", "clip", "pad30"], default="trim", help="--quick only")
    s.add_argument("--max-new-tokens", type=int, default=32, help="--quick only")
    s.add_argument("--out", type=Path, help="--quick only: also write the result as JSON here")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"omnishift {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
