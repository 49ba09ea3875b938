"""Page faults and system time of alignment-shaped steps, with glibc's defaults and with
:func:`omnishift.allocator.keep_freed_memory`, each in a fresh process of this one run.

Run: ``python benchmarks/allocator.py [--steps 40] [--threads 1]``. Prints one JSON object: per mode
the wall, user and system seconds and the minor page faults of ``--steps`` steps, and the ratios
``kept / default``.

Why: the CPU recipe's step time rose from 0.67 s to 1.07 s over 5,000 steps, with the system time
growing beside it. A step allocates and frees tensors of tens of megabytes whose sizes change with the
batch (the frames of 32 clips, the sampled vocabulary's scores); glibc returns each to the kernel and
faults it in again, zero-filled, on the next step. The step here has the adaptor's shapes (32 clips,
20-60 positions after the k = 5 stacking, 1,920 -> 2,048 -> 8,704 scores) on random numbers, forward
and backward, so it measures the allocator and not the model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_STEPS = """
import json, resource, sys, time, torch
from omnishift.allocator import keep_freed_memory
mode, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
applied = keep_freed_memory() if mode == "kept" else None
g = torch.Generator().manual_seed(0)
w1 = torch.randn(1920, 2048, generator=g, requires_grad=True)
w2 = torch.randn(2048, 8704, generator=g, requires_grad=True)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for i in range(steps):
    t = 20 + (i * 7) % 40
    x = torch.randn(32, t, 1920, generator=g)            # B, T/k, C*k
    h = torch.relu(x @ w1)                               # B, T/k, H
    loss = (h @ w2).log_softmax(-1).mean()               # B, T/k, V'
    loss.backward()
    w1.grad = w2.grad = None
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": applied, "wall_s": round(time.perf_counter() - t0, 2),
                  "user_s": round(r1.ru_utime - r0.ru_utime, 2), "sys_s": round(r1.ru_stime - r0.ru_stime, 2),
                  "minor_faults": r1.ru_minflt - r0.ru_minflt}))
"""


def run(mode: str, steps: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _STEPS, mode, str(steps), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    res = {m: run(m, args.steps, args.threads) for m in ("default", "kept")}
    ratios = {f"{k}_kept_over_default": round(res["kept"][k] / max(res["default"][k], 1e-9), 3)
              for k in ("wall_s", "sys_s", "minor_faults")}
    print(json.dumps({"steps": args.steps, "threads": args.threads, **res, **ratios}, indent=2))


if __name__ == "__main__":
    main()
