"""Command line of adaptor alignment: ``align-data``, ``align`` and ``eval-ctc``.

``omnishift data align`` builds the synthetic alignment set, ``omnishift align CONFIG`` trains the
adaptor on it with the LLM frozen, and ``omnishift eval ctc MODEL`` shows what an aligned adaptor
hears on a benchmark's recordings (its greedy CTC transcript and the WER against the question).
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.evaluate.reading_args import add_reading_args, reading_from_args
from omnishift.schema import positive_int


def cmd_align_data(args) -> int:
    from omnishift.data.augment import AugmentConfig, parse_engines
    from omnishift.align.dataset import alignment_texts, build_alignment_set, parse_text_parts

    policy = {"policy": args.policy, "k": args.k, "margin_s": args.margin}
    texts = alignment_texts(parts=parse_text_parts(args.texts))
    summary = build_alignment_set(args.out, args.n, encoder=args.encoder, policy=policy, seed=args.seed, texts=texts,
                                  workers=args.workers, shard_size=args.shard_size,
                                  augment_cfg=AugmentConfig(engines=parse_engines(args.engines),
                                                            lead_silence=(0.0, args.lead_silence),
                                                            trail_silence=(0.0, args.trail_silence)))
    print(json.dumps({k: summary[k] for k in ("clips", "skipped", "hours", "distinct_voices", "clips_per_s_this_call",
                                              "fingerprint")}))
    return 0


def cmd_align(args) -> int:
    """``omnishift align NAME|RECIPE.yaml|CONFIG.yaml``: a recipe (sets, phases, decoding) or one run."""
    from omnishift.align.recipe import is_recipe, load_recipe, run_recipe

    if is_recipe(args.config):
        cfg, origin = load_recipe(args.config, args.overrides)
        print(run_recipe(cfg, origin))
        return 0
    from omnishift.align.config import load_align_config
    from omnishift.align.trainer import align

    print(align(load_align_config(args.config, args.overrides), resume=args.resume))
    return 0


def cmd_ls(args) -> int:
    """``omnishift align ls``: the shipped recipes, what each makes and what it measured."""
    from omnishift.align.recipe import RECIPES, load_recipe

    for name in RECIPES:
        cfg, _ = load_recipe(name)
        minutes = sum(x.minutes or 0 for x in cfg.sets + cfg.phases)
        print(f"{name}\n  run:      omnishift align {name}   (resumable; out_dir {cfg.out_dir})\n"
              f"  makes:    {cfg.makes}\n  measured: {cfg.measured}\n"
              f"  parts:    {len(cfg.sets)} sets + {len(cfg.phases)} phase(s), about {minutes:.0f} min on 2 cores")
    return 0


def cmd_eval_ctc(args) -> int:
    from omnishift.evaluate.ctc import eval_ctc
    from omnishift.evaluate.qa import load_benchmark
    from omnishift.models.speech_llm import SpeechLLM
    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out)
    model = SpeechLLM.from_pretrained(args.model, reading=reading_from_args(args))
    examples = load_benchmark(args.benchmark, ["s2t"], args.limit, args.subset, args.seed, args.audio_dir)
    summary = eval_ctc(model, examples, args.out)
    print(json.dumps({"model": args.model, "benchmark": args.benchmark, **summary}))
    return 0


def cmd_eval_aligned(args) -> int:
    """``omnishift eval aligned FOLDER --benchmark B --out D``: WER (greedy, beam), S2T, listening gain."""
    from omnishift.align.assess import assess_aligned
    from omnishift.evaluate.qa import EvalSettings, load_benchmark

    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out)
    examples = load_benchmark(args.benchmark, ["s2t"], args.limit, args.subset, args.seed, args.audio_dir)
    settings = EvalSettings(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                            feature_cache=Path(args.out) / "features")
    print(json.dumps(assess_aligned(args.model, examples, args.out, listen=args.listen, workers=args.workers,
                                    settings=settings)))
    return 0


def _benchmark_args(s) -> None:
    """The spoken benchmark a command reads (the same selection flags as ``omnishift eval``)."""
    s.add_argument("--benchmark", required=True, help="llama_questions, web_questions, or a manifest")
    s.add_argument("--limit", type=positive_int)
    s.add_argument("--subset", type=positive_int)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--audio-dir", help="where audio is synthesized when the benchmark has none")


def register(commands) -> None:
    """Register ``data align``, the ``align`` group (``run``, its bare form, and ``ls``), ``eval aligned``
    and ``eval ctc``."""
    s = commands.group("data").add_parser("align", help="build a resumable synthetic alignment set (eSpeak NG / SVOX Pico voices x effects, "
                                          "encoder states cached)")
    s.add_argument("--out", required=True, help="set folder (resumes a partial build with the same inputs)")
    s.add_argument("--n", type=positive_int, default=20000, help="clips")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    s.add_argument("--shard-size", type=int, default=500)
    s.add_argument("--encoder", help="encoder name/folder (default: the default encoder)")
    s.add_argument("--texts", default="questions",
                   help="what is spoken, parts joined with '+': questions (questions/instructions), responses (the "
                        "instruction sets' response sentences: far more of the LLM's vocabulary); e.g. "
                        "questions+responses")
    s.add_argument("--engines", default="espeak",
                   help="synthesizers and their weights, e.g. espeak=3,pico=1 (pico needs omnishift[pico])")
    s.add_argument("--lead-silence", type=float, default=0.0, metavar="S",
                   help="add 0..S seconds of silence before each clip (real recordings start ~0.2 s early)")
    s.add_argument("--trail-silence", type=float, default=0.0, metavar="S", help="and 0..S seconds after it")
    s.add_argument("--policy", choices=["clip", "trim", "pad30"], default="clip",
                   help="window policy of the models that will use the set (default: clip)")
    s.add_argument("--k", type=int, default=5, help="adaptor frame stacking of those models")
    s.add_argument("--margin", type=float, default=0.2, help="seconds kept after the clip (trim/clip)")
    s.set_defaults(func=cmd_align_data)

    commands.alias("align-data", "data", "align")
    align = commands.group("align", help="align the adaptor, encoder and LLM frozen: run a recipe (run), list them (ls)",
                           default="run")
    s = align.add_parser("run", help="run a named recipe (omnishift align ls) or one align config; "
                                     "`omnishift align NAME` for short")
    s.add_argument("config", metavar="NAME|YAML",
                   help="a recipe name (cpu_listen), a recipe YAML (with phases:), or a single-run align YAML")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. out_dir=runs/align/mine or "
                                                "phases.0.loop.max_steps=100")
    s.add_argument("--resume", action="store_true", help="single-run YAML: continue from the run's last checkpoint "
                                                         "(a recipe always resumes)")
    s.set_defaults(func=cmd_align)

    s = align.add_parser("ls", help="list the shipped recipes: what each makes and its measured time")
    s.set_defaults(func=cmd_ls)
    commands.alias("ls", "align", "ls")

    ev = commands.group("eval")
    s = ev.add_parser("aligned", help="what an aligned model hears and answers in one call: greedy and beam CTC "
                                            "WER, S2T accuracy and listening gain on a benchmark's recordings")
    s.add_argument("model", help="aligned speech-LLM folder (it says how it reads speech: omnishift align writes it)")
    _benchmark_args(s)
    s.add_argument("--listen", type=int, default=100, metavar="N",
                   help="questions of the listening check (the model's own T2T answers as responses; 0: off)")
    s.add_argument("--workers", type=positive_int, default=2, help="processes decoding the clips (one thread each)")
    s.add_argument("--batch-size", type=positive_int, default=16)
    s.add_argument("--max-new-tokens", type=positive_int, default=64)
    s.add_argument("--out", required=True, help="folder: ctc_greedy/, ctc/, s2t/, listening.json, summary.json")
    s.set_defaults(func=cmd_eval_aligned)

    commands.alias("eval-aligned", "eval", "aligned")
    s = ev.add_parser("ctc", help="what an aligned adaptor hears: CTC transcripts (greedy, or beam search with the LLM) and WER on a benchmark")
    s.add_argument("model", help="speech-LLM folder with a CTC head")
    _benchmark_args(s)
    add_reading_args(s, speech_input=False)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_eval_ctc)
    commands.alias("eval-ctc", "eval", "ctc")
