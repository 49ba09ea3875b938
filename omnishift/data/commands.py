"""``omnishift synth``: speak a JSONL manifest's prompts to 16 kHz WAVs (eSpeak NG)."""

from __future__ import annotations


def cmd_synth(args) -> int:
    from omnishift.data.synth import SynthConfig, synth_manifest

    cfg = SynthConfig(voice=args.voice, rate=args.rate, pitch=args.pitch)
    out = synth_manifest(args.input, args.out_dir, cfg, text_field=args.text_field, overwrite=args.overwrite)
    print(out)
    return 0


def register(sub) -> None:
    s = sub.add_parser("synth", help="synthesize a JSONL manifest's prompts to 16 kHz WAVs (eSpeak NG)")
    s.add_argument("input", help="JSONL with id and text fields")
    s.add_argument("out_dir", help="folder for wavs/ and manifest.jsonl")
    s.add_argument("--voice", default="en-us")
    s.add_argument("--rate", type=int, default=175, help="words per minute")
    s.add_argument("--pitch", type=int, default=50)
    s.add_argument("--text-field", default="text", help="field to speak (e.g. instruction)")
    s.add_argument("--overwrite", action="store_true", help="re-synthesize existing WAVs")
    s.set_defaults(func=cmd_synth)
