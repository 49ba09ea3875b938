"""Whisper encoder time per clip: the 30-s window (``pad30`` / ``trim``) against the clip's own window (``clip``).

Run: ``python benchmarks/encoder_window.py [--n 32] [--threads 2]``. Prints one JSON object:

* ``s_per_clip``: wall seconds per clip of :func:`omnishift.models.encoder.encode_clips` under each
  policy (median of ``--repeats`` passes over the same ``--n`` eSpeak NG questions, default
  encoder, one clip per forward for ``clip`` and batches of 8 for the 30-s window);
* ``speedup_clip_vs_30s``: ratio of the two, measured in this one run;
* ``mean_rel_diff_clip_vs_trim``: mean |a - b| / mean |b| between the two encodings of the same
  kept frames (why a model must keep one policy from training to use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SENTENCES = [
    "What is the capital of France?", "How many legs does a spider have?", "Who wrote the play Romeo and Juliet?",
    "Which planet is known as the red planet?", "What is the largest ocean on Earth?",
    "Who was the first person to walk on the Moon?", "What does a caterpillar turn into?",
    "What is twelve multiplied by seven?",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    from omnishift.data.synth import SynthConfig, synthesize
    from omnishift.models.defaults import load_encoder
    from omnishift.models.encoder import encode_clips
    from omnishift.models.precision import cpu_description
    from omnishift.models.processor import FramePolicy

    torch.set_num_threads(args.threads)
    enc, fe = load_encoder("whisper-tiny.en")
    voices = ["en-us", "en", "en-us+f3", "en-us+m3"]
    audios = [synthesize(SENTENCES[i % len(SENTENCES)], SynthConfig(voice=voices[i % len(voices)]))
              for i in range(args.n)]
    seconds = sum(len(a) for a in audios) / 16000
    out, states = {}, {}
    for policy, batch in (("trim", 8), ("clip", 1)):
        fp = FramePolicy(policy)
        encode_clips(enc, fe, fp, audios[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            got = []
            for s in range(0, len(audios), batch):
                got += encode_clips(enc, fe, fp, audios[s:s + batch])
            times.append(time.perf_counter() - t0)
        states[policy] = got
        out[policy] = statistics.median(times) / len(audios)
    diff = statistics.mean(float((a - b).abs().mean() / b.abs().mean()) for a, b in zip(states["clip"], states["trim"]))
    print(json.dumps({
        "n_clips": args.n, "mean_clip_s": round(seconds / args.n, 2), "threads": args.threads,
        "s_per_clip": {"30s_window (pad30/trim)": round(out["trim"], 4), "clip_window": round(out["clip"], 4)},
        "speedup_clip_vs_30s": round(out["trim"] / out["clip"], 1),
        "mean_rel_diff_clip_vs_trim": round(diff, 3),
        "machine": {**cpu_description(), "torch": torch.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
