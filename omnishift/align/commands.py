"""Command line of adaptor alignment: ``align-data``, ``align`` and ``eval-ctc``.

``omnishift align-data`` builds the synthetic alignment set, ``omnishift align CONFIG`` trains the
adaptor on it with the LLM frozen, and ``omnishift eval-ctc MODEL`` shows what an aligned adaptor
hears on a benchmark's recordings (its greedy CTC transcript and the WER against the question).
"""

from __future__ import annotations

import json
from pathlib import Path

from omnishift.models.ctc_decode import add_decoding_args, decoding_from_args
from omnishift.schema import positive_int


def cmd_align_data(args) -> int:
    from omnishift.align.augment import AugmentConfig
    from omnishift.align.dataset import alignment_texts, build_alignment_set

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


def parse_text_parts(spec: str) -> tuple[str, ...]:
    """``"questions+responses"`` -> ``("questions", "responses")``, unknown parts named."""
    from omnishift.align.dataset import TEXT_PARTS

    parts = tuple(p.strip() for p in spec.split("+") if p.strip())
    bad = [p for p in parts if p not in TEXT_PARTS]
    if bad or not parts:
        raise SystemExit(f"--texts {spec!r}: unknown part(s) {bad}; join any of {'/'.join(TEXT_PARTS)} with '+', "
                         "e.g. questions+responses")
    return parts


def parse_engines(spec: str) -> tuple:
    """``"espeak=3,pico=1"`` -> ``(("espeak", 3.0), ("pico", 1.0))`` (a bare name weighs 1)."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise SystemExit(f"--engines: weight of {name!r} is not a number ({weight!r}); e.g. espeak=3,pico=1")
    return tuple(out)


def cmd_align(args) -> int:
    from omnishift.align.config import load_align_config
    from omnishift.align.trainer import align

    print(align(load_align_config(args.config, args.overrides), resume=args.resume))
    return 0


def cmd_eval_ctc(args) -> int:
    from omnishift.evaluate.qa import load_benchmark
    from omnishift.models.speech_llm import SpeechLLM

    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out)
    model = SpeechLLM.from_pretrained(args.model, ctc_decoding=decoding_from_args(args))
    if args.checkpoint:  # the adaptor of an intermediate checkpoint of the same run (a learning curve)
        from safetensors.torch import load_file

        sd = load_file(str(Path(args.checkpoint) / "trainable.safetensors"))
        adaptor = {k[len("adaptor."):]: v for k, v in sd.items() if k.startswith("adaptor.")}
        if not adaptor:
            raise ValueError(f"{args.checkpoint}: no adaptor weights in trainable.safetensors (not an align checkpoint)")
        model.adaptor.load_state_dict(adaptor)
    examples = load_benchmark(args.benchmark, ["s2t"], args.limit, args.subset, args.seed, args.audio_dir)
    from omnishift.evaluate.ctc import eval_ctc

    summary = eval_ctc(model, examples, args.out)
    print(json.dumps({"model": args.model, "benchmark": args.benchmark, **summary}))
    return 0


def register(sub) -> None:
    """Register ``align-data``, ``align`` and ``eval-ctc``."""
    s = sub.add_parser("align-data", help="build a resumable synthetic alignment set (eSpeak NG / SVOX Pico voices x effects, "
                                          "encoder states cached)")
    s.add_argument("--out", required=True, help="set folder (resumes a partial build with the same inputs)")
    s.add_argument("--n", type=positive_int, default=20000, help="clips")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    s.add_argument("--shard-size", type=int, default=500)
    s.add_argument("--encoder", help="encoder name/folder (default: the default encoder)")
    s.add_argument("--texts", default="questions",
                   help="what is spoken, parts joined with '+': questions (questions/instructions), responses (the "
                        "instruction sets' response sentences: far more of the LLM's vocabulary), rare (lists of the "
                        "words those two seldom say); e.g. questions+responses")
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

    s = sub.add_parser("align", help="align the adaptor (CTC / KD objectives) with encoder and LLM frozen")
    s.add_argument("config", help="align YAML, e.g. configs/align/ctc.yaml")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. loop.max_steps=100")
    s.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    s.set_defaults(func=cmd_align)

    s = sub.add_parser("eval-ctc", help="what an aligned adaptor hears: CTC transcripts (greedy, or beam search with the LLM) and WER on a benchmark")
    s.add_argument("model", help="speech-LLM folder with a CTC head")
    s.add_argument("--benchmark", required=True, help="llama_questions, web_questions, or a manifest")
    s.add_argument("--limit", type=positive_int)
    s.add_argument("--subset", type=positive_int)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--audio-dir", help="where audio is synthesized when the benchmark has none")
    s.add_argument("--checkpoint", help="use the adaptor of this checkpoint folder of the same run "
                                        "(e.g. runs/align/ctc/checkpoints/step-00001000)")
    add_decoding_args(s)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_eval_ctc)
