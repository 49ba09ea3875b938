"""How fast eSpeak NG speaks on this machine: seconds of audio per wall-clock second.

Run: ``python benchmarks/synth.py [--repeats 3]``. Prints one JSON object:

* ``audio_seconds_per_wall_second``: 16 kHz audio produced per second of wall time by
  :func:`omnishift.data.synth.synthesize` (median over repeats of the 20 sentences below);
  the inverse, ``real_time_factor`` = wall / audio, is also given (lower is faster);
* ``per_call_overhead_ms``: the cost of a one-word call, mostly the per-utterance reload of
  the library that keeps synthesis deterministic;
* ``manifest_*``: the same 20 sentences through :func:`synth_manifest` (WAV writing included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

SENTENCES = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Who wrote the play Romeo and Juliet?",
    "Explain why the sky looks blue on a clear day.",
    "Give me three tips for staying healthy.",
    "What is the boiling point of water at sea level?",
    "Translate the word hello into Spanish.",
    "Which planet is known as the red planet?",
    "Describe the process of making a cup of tea.",
    "What is the largest ocean on Earth?",
    "Name a famous painting by Leonardo da Vinci.",
    "How long does it take light from the Sun to reach the Earth?",
    "Write a short poem about the autumn rain.",
    "What is twelve multiplied by seven?",
    "Why do we have seasons on our planet?",
    "Suggest a name for a small coffee shop near the river.",
    "Who was the first person to walk on the Moon?",
    "List the primary colours of light.",
    "What does a caterpillar turn into?",
    "Summarize the plot of a fairy tale in one sentence.",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from omnishift.data.synth import SAMPLE_RATE, SynthConfig, _engine, synth_manifest, synthesize
    from omnishift.models.precision import cpu_description

    cfg = SynthConfig()
    t0 = time.perf_counter()
    synthesize("Warm up.", cfg)  # imports scipy, copies the library
    first_call_s = time.perf_counter() - t0

    audio_s, walls = 0.0, []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        samples = sum(len(synthesize(s, cfg)) for s in SENTENCES)
        walls.append(time.perf_counter() - t0)
        audio_s = samples / SAMPLE_RATE
    wall = statistics.median(walls)

    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        synthesize("Hi.", cfg)
    overhead_ms = (time.perf_counter() - t0) / n * 1000

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"id": f"s{i:02d}", "text": s}) + "\n" for i, s in enumerate(SENTENCES)))
        t0 = time.perf_counter()
        synth_manifest(src, Path(tmp) / "out", cfg, progress=False)
        manifest_wall = time.perf_counter() - t0

    print(json.dumps({
        "sentences": len(SENTENCES),
        "audio_seconds": round(audio_s, 2),
        "wall_seconds_median": round(wall, 3),
        "audio_seconds_per_wall_second": round(audio_s / wall, 1),
        "real_time_factor": round(wall / audio_s, 5),
        "per_call_overhead_ms": round(overhead_ms, 2),
        "first_call_seconds": round(first_call_s, 2),
        "manifest_wall_seconds": round(manifest_wall, 3),
        "manifest_audio_seconds_per_wall_second": round(audio_s / manifest_wall, 1),
        "config": {"voice": cfg.voice, "rate": cfg.rate, "pitch": cfg.pitch},
        "espeak_ng": _engine().version,
        "repeats": args.repeats,
        **cpu_description(),
        "cpu_count": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
