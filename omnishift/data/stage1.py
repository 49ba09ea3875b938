"""The paper's Stage-1 training data (Sec. 2.2): first turns of VoiceAssistant-400K and
Spoken-Alpaca-GPT4, each spoken query with its transcript and text response, as one manifest.

``omnishift data stage1 --out DIR`` loads both through ``datasets`` (hub ids, or a local copy:
a ``save_to_disk`` folder or a folder of parquet files), keeps first turns, decodes and resamples
every query to 16 kHz mono WAV (``DIR/wavs/``), holds out a seeded test set disjoint from training
(the paper's 500 examples), and reports every skipped row with its reason::

    DIR/manifest.jsonl   training rows (id, text = transcript, audio, response)
    DIR/test.jsonl       held-out rows
    DIR/summary.json     rows read / kept / skipped per source and reason, split sizes, seed

``configs/paper/*`` read ``runs/data/stage1/manifest.jsonl``: run with ``--out runs/data/stage1``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from omnishift.data.manifest import SkipReport, write_manifest
from omnishift.paths import atomic_write_text

log = logging.getLogger(__name__)


def first_turns(ds):
    """Keep each conversation's first turn: the lowest ``round`` per ``index`` (VoiceAssistant-400K
    stores one turn per row; rounds are compared as numbers when they parse, else as text)."""
    if "round" not in ds.column_names or "index" not in ds.column_names:
        return ds

    def order(r) -> tuple:
        r = str(r)
        return (0, float(r), r) if r.replace(".", "", 1).isdigit() else (1, 0.0, r)

    best: dict[str, tuple] = {}
    for i, (idx, rnd) in enumerate(zip(ds["index"], ds["round"])):
        key = order(rnd)
        if str(idx) not in best or key < best[str(idx)][0]:
            best[str(idx)] = (key, i)
    return ds.select(sorted(i for _, i in best.values()))


#: name -> (hub id = HF_SCHEMAS key, split, row selection)
SOURCES = {
    "voice_assistant": ("gpt-omni/VoiceAssistant-400K", "train", first_turns),
    "spoken_alpaca": ("GSQA/spoken-alpaca-gpt4", "train", None),
}


def build_stage1(out: str | Path, sources: dict[str, str] | None = None, limit: int | None = None,
                 test_size: int = 500, seed: int = 0) -> dict:
    """Build the Stage-1 manifest (see the module docstring).

    Args:
        out: output folder.
        sources: ``{name: hub id or local path}`` for names of :data:`SOURCES` (default: every
            source from the hub).
        limit: rows read per source (first ones, after the first-turn selection).
        test_size: held-out examples, drawn with ``seed`` from all kept rows.
        seed: the hold-out draw.

    Returns:
        The summary (also written to ``out/summary.json``).
    """
    from omnishift.data.sources import load_hf_dataset

    out = Path(out)
    sources = sources or {name: hub for name, (hub, _, _) in SOURCES.items()}
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown stage-1 source(s) {unknown}; known: {sorted(SOURCES)}")
    examples, per_source = [], {}
    for name, where in sources.items():
        hub, split, select = SOURCES[name]
        report = SkipReport()
        got = load_hf_dataset(where, split, out / "wavs", schema=hub, limit=limit, on_error="skip", report=report,
                              select=select)
        per_source[name] = {"from": where, "kept": len(got), "skipped": report.count, "skipped_by_reason": report.by_reason}
        log.info("stage-1 %s: %d kept, %s", name, len(got), report.summary())
        examples += got
    if len(examples) <= test_size:
        raise ValueError(f"{len(examples)} usable rows cannot hold out {test_size} test examples; lower --test-size")
    order = np.random.default_rng(seed).permutation(len(examples))
    test_ids = set(order[:test_size].tolist())
    test = [e for i, e in enumerate(examples) if i in test_ids]
    train = [e for i, e in enumerate(examples) if i not in test_ids]
    write_manifest(out / "manifest.jsonl", train)
    write_manifest(out / "test.jsonl", test)
    summary = {"sources": per_source, "train": len(train), "test": len(test), "seed": seed, "limit": limit}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
