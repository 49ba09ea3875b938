"""``omnishift data synth`` (speak a JSONL manifest's prompts to 16 kHz WAVs with eSpeak NG) and
``omnishift data stage1`` (the paper's Stage-1 training manifest from the hub or local copies)."""

from __future__ import annotations


def cmd_synth(args) -> int:
    from omnishift.data.synth import SynthConfig, synth_manifest
    from omnishift.paths import ensure_writable_dir

    ensure_writable_dir(args.out_dir, "OUT_DIR")
    cfg = SynthConfig(voice=args.voice, rate=args.rate, pitch=args.pitch)
    out = synth_manifest(args.input, args.out_dir, cfg, text_field=args.text_field, overwrite=args.overwrite)
    print(out)
    return 0


def cmd_data_stage1(args) -> int:
    import json

    from omnishift.data.stage1 import build_stage1
    from omnishift.schema import parse_labelled

    sources = parse_labelled(args.sources, "HUB_ID_OR_PATH") if args.sources else None
    print(json.dumps(build_stage1(args.out, sources, limit=args.limit, test_size=args.test_size, seed=args.seed),
                     indent=2))
    return 0


def register(commands) -> None:
    """Register the ``data`` group's ``synth`` and ``stage1`` (``data align`` is the align package's)."""
    data = commands.group("data", help="build data: speak a manifest (synth), the paper's Stage-1 set (stage1), "
                                       "a synthetic alignment set (align)")
    s = data.add_parser("synth", help="synthesize a JSONL manifest's prompts to 16 kHz WAVs (eSpeak NG)")
    s.add_argument("input", help="JSONL with id and text fields")
    s.add_argument("out_dir", help="folder for wavs/ and manifest.jsonl")
    s.add_argument("--voice", default="en-us")
    s.add_argument("--rate", type=int, default=175, help="words per minute")
    s.add_argument("--pitch", type=int, default=50)
    s.add_argument("--text-field", default="text", help="field to speak (e.g. instruction)")
    s.add_argument("--overwrite", action="store_true", help="re-synthesize existing WAVs")
    s.set_defaults(func=cmd_synth)

    from omnishift.schema import positive_int

    commands.alias("synth", "data", "synth")
    st = data.add_parser("stage1", help="first turns of VoiceAssistant-400K + Spoken-Alpaca-GPT4 -> manifest, "
                                        "16 kHz WAVs and a seeded held-out test set")
    st.add_argument("--out", required=True, help="output folder (configs/paper/* read runs/data/stage1)")
    st.add_argument("--sources", nargs="+", metavar="NAME=HUB_ID_OR_PATH",
                    help="voice_assistant=... spoken_alpaca=... (a local save_to_disk or parquet folder; "
                         "default: both from the hub)")
    st.add_argument("--limit", type=positive_int, help="rows read per source")
    st.add_argument("--test-size", type=positive_int, default=500, help="held-out examples (paper: 500)")
    st.add_argument("--seed", type=int, default=0)
    st.set_defaults(func=cmd_data_stage1)
