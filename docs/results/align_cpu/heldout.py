"""The alignment sets' held-out synthetic clips, shared by the dev-set scripts beside this file.

Every run keeps the last ``data.heldout`` clips of each set out of training. The clips read here are
the last 256 of the set's *last shard*, so they are the same whatever ``limit`` a run used: scripts
can compare adaptors from different runs on them (never on LLaMA Questions).
"""
import json
from pathlib import Path

from safetensors.torch import load


def heldout(name: str, n: int) -> list[dict]:
    """The first ``n`` of the last 256 clips of ``runs/align/NAME``'s last shard, each with its
    ``encoder_states`` (frames, C)."""
    f = sorted(p for p in Path(f"runs/align/{name}/shards").glob("*.safetensors") if not p.name.startswith("."))[-1]
    t = load(f.read_bytes())
    off = t["offsets"].tolist()
    recs = [json.loads(x) for x in f.with_suffix(".jsonl").read_text().splitlines()]
    recs = [r for r in recs if "skipped" not in r]
    items = [{**r, "encoder_states": t["states"][off[j]:off[j + 1]]} for j, r in enumerate(recs)]
    return items[-256:][:n]
