"""What a model *is*, as content hashes taken without loading it: the key of every reuse decision.

A speech-LLM folder's answers depend on its own files and, when it stores only an adaptor or a
PEFT adapter, on the base LLM and encoder it names; a base model on its config and the folders its
names resolve to. Hashing files (not loaded weights) lets a pipeline decide whether an evaluation
or a training run on disk is still current before it spends seconds to minutes loading the model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omnishift.reuse import content_sha256

CONFIG_NAME = "omnishift_config.json"


def part_fingerprint(name_or_path: str) -> str:
    """A base part (LLM or encoder) by content: a default-model name resolves to its prepared
    folder (prepared now if missing), a local folder is hashed, a hub id stays a name (``hub:ID``)."""
    from omnishift.models.defaults import resolve_model

    path = Path(resolve_model(name_or_path))
    return content_sha256(path) if path.exists() else f"hub:{name_or_path}"


def folder_fingerprint(folder: str | Path) -> dict:
    """A saved speech-LLM folder: its files, plus the base parts it reads from outside itself."""
    folder = Path(folder)
    cfg_file = folder / CONFIG_NAME
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder} is not a speech-LLM folder (no {CONFIG_NAME}); train or align it first")
    meta = json.loads(cfg_file.read_text(encoding="utf-8"))
    out = {"folder": content_sha256(folder), "encoder": part_fingerprint(meta["encoder"])}
    if meta.get("llm_format") != "full":  # the adaptor (and adapter) sit on the base LLM it names
        out["llm"] = part_fingerprint(meta["llm"])
    return out


def config_fingerprint(config) -> dict:
    """A base speech LLM built from a :class:`SpeechLLMConfig` (or its dict): the config and its parts."""
    d = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {"config": d, "llm": part_fingerprint(d["llm"]), "encoder": part_fingerprint(d["encoder"])}


def model_fingerprint(model) -> dict:
    """What a run starts from: a saved folder (a path string) or a config (fresh adaptor on base parts)."""
    return folder_fingerprint(model) if isinstance(model, (str, Path)) else config_fingerprint(model)
