"""Command line of the spoken-QA evaluation: the ``eval`` group's ``qa``, ``table``, ``ablate-rank``.

``omnishift eval qa MODEL`` (short: ``omnishift eval MODEL``) evaluates one model (``base``,
``cascade`` or a speech-LLM folder) on one benchmark; ``omnishift eval table`` puts several
evaluated models side by side (Table 2); ``omnishift eval ablate-rank`` trains and evaluates LoRA at
several ranks (Table 3). The short form reads its first word as a sub-command when it names one, so a
model folder called like one (``table``) is written as a path (``./table``).
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.evaluate.reading_args import add_reading_args, reading_from_args
from omnishift.schema import positive_int


def _benchmark_args(s) -> None:
    s.add_argument("--limit", type=positive_int, help="read only the first N items")
    s.add_argument("--subset", type=positive_int, help="then a fixed-seed sample of N items, the same for every model")
    s.add_argument("--seed", type=int, default=0, help="seed of --subset")
    s.add_argument("--audio-dir", help="where S2T audio is synthesized (eSpeak NG) when the benchmark has none; "
                                       "reused on later runs")
    s.add_argument("--prompt", choices=["instruction", "plain"], default="instruction",
                   help="T2T user turn: question + LLaMA-Omni instruction, or the bare question")
    s.add_argument("--batch-size", type=positive_int, default=16)
    s.add_argument("--max-new-tokens", type=positive_int, default=64)
    s.add_argument("--feature-cache", help="S2T: folder of cached Whisper encoder outputs, shared by every model "
                                           "evaluated on the same clips (each clip is encoded once)")


def _selection(args):
    from omnishift.evaluate.qa import BenchmarkSelection

    return BenchmarkSelection(args.limit, args.subset, args.seed, args.audio_dir)


def _settings(args):
    from omnishift.evaluate.qa import EvalSettings

    return EvalSettings(prompt=args.prompt, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        feature_cache=args.feature_cache)


def cmd_eval(args) -> int:
    """``omnishift eval``: one model, one benchmark, T2T and/or S2T."""
    from omnishift.evaluate.qa import build_eval_items, evaluate
    from omnishift.models.speech_llm import load_speech_llm

    cascade = args.model == "cascade"
    modes = (["s2t"] if cascade else ["t2t", "s2t"]) if args.mode is None or args.mode == "both" else [args.mode]
    if cascade and modes != ["s2t"]:
        raise ValueError("the cascade is an S2T baseline (its T2T is the base LLM's): use --mode s2t, and "
                         "`omnishift eval base --mode t2t` for T2T")
    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out)  # before loading the benchmark, which may synthesize its audio
    selection, settings = _selection(args), _settings(args)
    examples = selection.load(args.benchmark, modes)
    model = load_speech_llm(None if args.model in ("base", "cascade") else args.model, reading=reading_from_args(args))
    meta = {"model": args.model, "benchmark": args.benchmark, "prompt": args.prompt, **selection.meta(),
            "speech_input": model.config.speech_input, "speech_options": model.config.speech_options,
            "ctc_decoding": model.config.ctc_decoding}
    for mode in modes:
        out_dir = Path(args.out) / mode
        if cascade:
            from omnishift.evaluate.cascade import WhisperASR, evaluate_cascade

            summary = evaluate_cascade(model, WhisperASR(args.asr_model), examples, out_dir, settings,
                                       meta={**meta, "mode": mode})
        else:
            summary = evaluate(model, build_eval_items(examples, mode, prompt=args.prompt), out_dir, settings,
                               label=f"{args.model} {mode}", meta={**meta, "mode": mode})
        print(json.dumps(summary))
    return 0


def cmd_eval_table(args) -> int:
    """``omnishift eval table``: summaries of several runs -> Markdown + CSV table."""
    from omnishift.evaluate.table import write_table

    md, csv_path = write_table(args.runs, args.out, title=args.title)
    print(md.read_text(encoding="utf-8"), end="")
    print(f"written: {md}, {csv_path}")
    return 0


def cmd_ablate_rank(args) -> int:
    """``omnishift eval ablate-rank``: LoRA at each rank, trained and evaluated, as Table 3."""
    from omnishift.evaluate.ablation import ablate_rank

    md, _ = ablate_rank(args.config, args.ranks, args.benchmark, args.out, overrides=args.overrides,
                        modes=["t2t", "s2t"] if args.mode == "both" else [args.mode], selection=_selection(args),
                        settings=_settings(args))
    print(md.read_text(encoding="utf-8"), end="")
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


def register(commands) -> None:
    """Register ``ask`` and the ``eval`` group's ``qa`` (its bare form), ``table``, ``ablate-rank`` and
    ``listening``."""
    s = commands.add_parser("ask", help="answer one question from text or from a WAV file")
    s.add_argument("--text", help="question as text")
    s.add_argument("--audio", help="question as an audio file")
    s.add_argument("--model", help="speech-LLM folder (default: base models, untrained adaptor)")
    s.add_argument("--no-instruction", dest="instruction", action="store_false",
                   help="send --text as is, without the LLaMA-Omni answer instruction")
    s.add_argument("--max-new-tokens", type=positive_int, default=64)
    s.set_defaults(func=cmd_ask)

    ev = commands.group("eval", help="measure: spoken-QA accuracy (qa), Table 2 (table), Table 3 (ablate-rank), "
                                     "listening gain (listening), an aligned folder (aligned), CTC transcripts (ctc)",
                        default="qa")
    s = ev.add_parser("qa", help="spoken-QA accuracy from text (T2T) and speech (S2T); `omnishift eval MODEL` for short")
    s.add_argument("model", help="'base' (default models), 'cascade' (Whisper ASR -> base LLM, S2T) "
                                 "or a speech-LLM folder")
    s.add_argument("--benchmark", required=True, help="llama_questions, web_questions, or a manifest")
    s.add_argument("--mode", choices=["t2t", "s2t", "both"],
                   help="default: both (cascade: s2t)")
    s.add_argument("--asr-model", help="cascade only: a CTranslate2 Whisper folder (default: shipped tiny.en)")
    add_reading_args(s)
    _benchmark_args(s)
    s.add_argument("--out", required=True, help="output folder (per-mode items.jsonl + summary.json)")
    s.set_defaults(func=cmd_eval)

    s = ev.add_parser("table", help="side-by-side accuracy table (Table 2) from evaluated runs")
    s.add_argument("runs", nargs="+", metavar="[NAME=]RUN_DIR",
                   help="one row per run folder (summary.json files under it); NAME defaults to the evaluated model")
    s.add_argument("--out", required=True, help="Markdown file; a .csv is written beside it")
    s.add_argument("--title", default="Model", help="header of the row-name column")
    s.set_defaults(func=cmd_eval_table)

    commands.alias("eval-table", "eval", "table")
    s = ev.add_parser("ablate-rank", help="LoRA rank ablation (Table 3): train + evaluate per rank")
    s.add_argument("config", help="training YAML, e.g. configs/default/lora.yaml")
    s.add_argument("overrides", nargs="*", help="key=value training overrides, e.g. loop.max_steps=50")
    s.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 24])
    s.add_argument("--benchmark", nargs="+", required=True, help="one or more benchmarks")
    s.add_argument("--mode", choices=["t2t", "s2t", "both"], default="both")
    _benchmark_args(s)
    s.add_argument("--out", required=True, help="ablation folder (r{r}/train, r{r}/eval, table3.md)")
    s.set_defaults(func=cmd_ablate_rank)

    from omnishift.evaluate.listening import add_parser as add_listening  # its parser lives beside its code

    commands.alias("ablate-rank", "eval", "ablate-rank")
    add_listening(ev)
    commands.alias("eval-listening", "eval", "listening")
    from omnishift.evaluate.drift import add_parser as add_drift

    add_drift(ev)
