"""What produced an artifact, recorded beside it and checked before the artifact is reused.

Why: a file left by an earlier run was reused because its id or name matched (answers of
another model published under a new label, old clips paired with edited questions). Every reusable
folder therefore holds ``PRODUCED_BY.json``: the inputs that determine its content (model weights'
hash, prompt, decoding settings, texts, voices, config) and their fingerprint. A later run with other
inputs is refused with a message naming both fingerprints, the keys that changed and the way out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omnishift.paths import atomic_write_text

PRODUCED_BY = "PRODUCED_BY.json"


def fingerprint(inputs: dict) -> str:
    """16 hex digits of the sha256 of ``inputs`` as canonical JSON."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_sha256(module) -> str:
    """sha256 of a torch module's config (when it has one) and every tensor of its state dict.

    The config's ``_name_or_path`` (the folder it was loaded from) is left out: the same weights
    loaded from another cache folder (another ``OMNISHIFT_HOME``) are the same model."""
    import torch

    h = hashlib.sha256()
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        d = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def same_weights(a, b) -> bool:
    """Whether two modules hold bit-identical tensors under the same state-dict names."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def model_identity(model) -> dict:
    """What decides a model's outputs: its config and the hashes of its LLM and adaptor weights
    (a test double without them is identified by its class name)."""
    import dataclasses

    import torch

    out = {"class": type(model).__name__}
    for part in ("llm", "adaptor"):
        module = getattr(model, part, None)
        if isinstance(module, torch.nn.Module):
            out[part] = weights_sha256(module)
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):
        out["config"] = dataclasses.asdict(config)
    return out


def items_fingerprint(items: list[dict], keys=("prompt", "response", "audio")) -> str:
    """Fingerprint of what a pass over ``items`` reads: their ``keys``, audio arrays by content."""
    import numpy as np

    h = hashlib.sha256()
    for it in items:
        for k in keys:
            v = it.get(k)
            if v is not None and not isinstance(v, (str, Path, int, float, list, dict)):
                v = hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()
            h.update(json.dumps([k, v], default=str).encode())
    return h.hexdigest()[:16]


def check_produced_by(folder: str | Path, inputs: dict, what: str, fix: str,
                      results: tuple[str, ...] | None = None) -> None:
    """Record ``inputs`` in ``folder/PRODUCED_BY.json``, or refuse if the folder was made from others.

    Args:
        folder: the artifact's folder (created if missing).
        inputs: JSON-able description of everything that determines the artifact.
        what: the artifact, for the message (e.g. "evaluation").
        fix: what the user can do (e.g. "use a new --out").
        results: names of the files that hold the artifact (default: any file): their presence
            without a record means nothing says what produced them.

    Raises:
        ValueError: the folder holds a ``PRODUCED_BY.json`` with another fingerprint, or results but
            no record (made before records existed: nothing says what produced them).
    """
    folder = Path(folder)
    record = {"fingerprint": fingerprint(inputs), "inputs": json.loads(json.dumps(inputs, default=str))}
    f = folder / PRODUCED_BY
    if f.is_file():
        old = json.loads(f.read_text(encoding="utf-8"))
        if old.get("fingerprint") != record["fingerprint"]:
            changed = sorted(k for k in set(old.get("inputs", {})) | set(record["inputs"])
                             if old.get("inputs", {}).get(k) != record["inputs"].get(k))
            raise ValueError(f"{folder} holds a {what} made from other inputs (fingerprint {old.get('fingerprint')} "
                             f"vs {record['fingerprint']}; changed: {changed}); {fix}")
        return
    present = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    if any(n != PRODUCED_BY and (results is None or n in results) for n in present):
        raise ValueError(f"{folder} holds a {what} with no record of what produced it; {fix}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(f, json.dumps(record, indent=2) + "\n")
