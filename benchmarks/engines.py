"""How fast each alignment-set synthesizer speaks on this machine (one thread, one run).

Run: ``python benchmarks/engines.py [--repeats 2]``. Prints one JSON object with, per engine of
:data:`omnishift.data.voices.ENGINES` that is installed, the seconds of 16 kHz audio produced
per wall-clock second over the 20 sentences of ``benchmarks/synth.py`` (median over repeats,
one fixed mid-range voice/rate/pitch plan), and each engine's cost relative to eSpeak NG measured
in the same run. An engine that is not installed is listed under ``missing`` with its error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from synth import SENTENCES  # noqa: E402

from omnishift.data.augment import AugmentConfig  # noqa: E402
from omnishift.data.voices import ENGINES  # noqa: E402
from omnishift.models.precision import cpu_description  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    aug, out, missing = AugmentConfig(), {}, {}
    for name, engine in ENGINES.items():
        try:
            voices = engine.voices()
        except ImportError as e:
            missing[name] = str(e)
            continue
        plan = engine.plan(np.random.default_rng(0), voices, aug)
        engine.speak("Warm up.", plan)  # model / library load is not the per-clip cost
        rates = []
        for _ in range(args.repeats):
            t0, audio = time.perf_counter(), 0.0
            for s in SENTENCES:
                audio += len(engine.speak(s, plan)) / 16000
            rates.append(audio / (time.perf_counter() - t0))
        out[name] = {"plan": plan, "audio_seconds_per_wall_second": round(statistics.median(rates), 1)}
    base = out.get("espeak", {}).get("audio_seconds_per_wall_second")
    for v in out.values():
        if base:
            v["cost_vs_espeak"] = round(base / v["audio_seconds_per_wall_second"], 2)
    print(json.dumps({"engines": out, "missing": missing, "sentences": len(SENTENCES), "threads": 1,
                      "machine": cpu_description()}, indent=1))


if __name__ == "__main__":
    main()
