"""Loaders that turn every data source into :class:`~omnishift.data.manifest.Example` lists.

Sources: the reference folders in ``../shared/data`` (LLaMA Questions with its 300 recordings,
Web Questions, instruction files), any JSONL manifest, and the paper's HF datasets for users with
hub access. HF audio is decoded here (with soundfile, not the ``datasets`` audio decoder, which
needs torchcodec) and written as 16 kHz mono 16-bit WAVs under ``audio_dir``, so every source ends
in the one manifest format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from omnishift.data.audio import AudioError, load_audio, wav_bytes
from omnishift.data.manifest import Example, SkipReport, read_manifest
from omnishift.models.encoder import SAMPLE_RATE
from omnishift.paths import atomic_write_bytes, shared_data_dir


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def load_llama_questions(data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
    """LLaMA Questions: 300 questions, one reference answer each, the original recordings."""
    root = Path(data_dir or shared_data_dir()) / "llama_questions"
    out = []
    for lineno, row in _jsonl(root / "questions.jsonl"):
        num = int(re.sub(r"\D", "", row["id"]))
        wav = root / "wav" / f"{num}.wav"
        if not wav.is_file():
            raise FileNotFoundError(f"{root / 'questions.jsonl'}:{lineno}: recording {wav} missing")
        out.append(Example(id=row["id"], text=row["question"], audio=str(wav), answers=list(row["answers"])))
        if limit and len(out) >= limit:
            break
    return out


def load_web_questions(split: str = "test", data_dir: str | Path | None = None, limit: int | None = None) -> list[Example]:
    """Web Questions (text only here; S2T audio is synthesized with ``omnishift data synth``)."""
    path = Path(data_dir or shared_data_dir()) / "web_questions" / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; splits are 'test' and 'train'")
    out = []
    for _, row in _jsonl(path):
        text = row.get("question") or row.get("instruction")
        out.append(Example(id=row["id"], text=text, answers=list(row["answers"]), response=row.get("output")))
        if limit and len(out) >= limit:
            break
    return out


def load_instructions(name_or_path: str, data_dir: str | Path | None = None, self_contained_only: bool = True,
                      limit: int | None = None) -> list[Example]:
    """Instruction data ``{"id","instruction","input","output","self_contained"}``.

    Args:
        name_or_path: a file stem in ``instructions/`` (e.g. ``alpaca_gpt4_llamafactory_demo1k``) or a path.
        self_contained_only: keep only rows that make sense spoken aloud (no passage in ``input``).
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = Path(data_dir or shared_data_dir()) / "instructions" / f"{name_or_path}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"instruction file {name_or_path!r} not found (looked for {path})")
    out = []
    for lineno, row in _jsonl(path):
        for key in ("id", "instruction", "output"):
            if key not in row:
                raise ValueError(f"{path}:{lineno}: missing field {key!r}")
        if self_contained_only and not row.get("self_contained", False):
            continue
        text = row["instruction"] if not row.get("input") else f"{row['instruction']}\n{row['input']}"
        out.append(Example(id=str(row["id"]), text=text, response=row["output"]))
        if limit and len(out) >= limit:
            break
    return out


@dataclass(frozen=True)
class HFSchema:
    """Column mapping of one HF dataset onto :class:`Example`."""

    text: str
    audio: str | None
    response: str | None = None
    answers: str | None = None
    id: str | None = None


HF_SCHEMAS = {
    "gpt-omni/VoiceAssistant-400K": HFSchema(text="question", audio="question_audio", response="answer"),
    "GSQA/spoken-alpaca-gpt4": HFSchema(text="instruction", audio="input_audio", response="output"),
    "fixie-ai/llama-questions": HFSchema(text="question", audio="audio", answers="answer"),
    # Column names as published on the hub cards (url / question / answers / audio, 16 kHz).
    "chiyuanhsiao/spoken-web-questions": HFSchema(text="question", audio="audio", answers="answers"),
    "fixie-ai/spoken-web-questions": HFSchema(text="question", audio="audio", answers="answers"),
}


def _first(v):
    """First turn of multi-turn cells (lists), the value itself otherwise."""
    return v[0] if isinstance(v, (list, tuple)) and v else v


def _open_hf(name_or_path: str, split: str, **load_kwargs):
    import datasets

    path = Path(name_or_path)
    if path.is_dir() and (path / "dataset_info.json").is_file():
        ds = datasets.load_from_disk(str(path))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if path.exists():
        files = sorted(str(p) for p in path.glob("*.parquet")) if path.is_dir() else [str(path)]
        return datasets.load_dataset("parquet", data_files=files, split="train")
    return datasets.load_dataset(name_or_path, split=split, **load_kwargs)


def load_hf_dataset(name_or_path: str, split: str, audio_dir: str | Path, schema: str | None = None,
                    limit: int | None = None, on_error: str = "raise", report: SkipReport | None = None,
                    select=None, **load_kwargs) -> list[Example]:
    """An HF dataset (hub id, ``save_to_disk`` folder, or parquet) as Examples with WAV files.

    Args:
        name_or_path: hub id or local path.
        split: split name (hub / DatasetDict).
        audio_dir: where decoded audio is written as ``<id>.wav`` (16 kHz mono 16-bit).
        schema: key of :data:`HF_SCHEMAS` when ``name_or_path`` is not itself one.
        on_error: ``raise`` or ``skip`` (bad audio, and rows without text or response, counted in
            ``report`` with the reason).
        select: optional ``Dataset -> Dataset`` applied after opening (e.g. keep first turns).
    """
    from datasets import Audio

    key = schema or name_or_path
    if key not in HF_SCHEMAS:
        raise ValueError(f"no column mapping for {key!r}; pass schema= one of {sorted(HF_SCHEMAS)}")
    sc = HF_SCHEMAS[key]
    ds = _open_hf(name_or_path, split, **load_kwargs)
    if select is not None:
        ds = select(ds)
    missing = [c for c in (sc.text, sc.audio, sc.response, sc.answers) if c and c not in ds.column_names]
    if missing:
        raise ValueError(f"{name_or_path}: columns {missing} missing (has {ds.column_names}); wrong schema?")
    if sc.audio and isinstance(ds.features[sc.audio], Audio):
        ds = ds.cast_column(sc.audio, Audio(decode=False))  # bytes/path, decoded below with soundfile
    audio_dir = Path(audio_dir)
    report = report if report is not None else SkipReport()
    out = []
    for i, row in enumerate(ds):
        if limit and len(out) >= limit:
            break
        ex_id = str(row[sc.id]) if sc.id and sc.id in row else f"{key.split('/')[-1]}_{i:06d}"
        text, response = _first(row[sc.text]), _first(row[sc.response]) if sc.response else "-"
        empty = [c for c, v in ((sc.text, text), (sc.response, response)) if c and not (isinstance(v, str) and v.strip())]
        if empty:
            if on_error != "skip":
                raise ValueError(f"{name_or_path} row {i} ({ex_id}): empty {empty}; fix the row or pass on_error='skip'")
            report.add(ex_id, f"empty {empty[0]}")
            continue
        ex = Example(id=ex_id, text=str(text))
        if sc.response:
            ex.response = str(response)
        if sc.answers:
            ans = row[sc.answers]
            ex.answers = [str(a) for a in ans] if isinstance(ans, (list, tuple)) else [str(ans)]
        if sc.audio:
            try:
                audio = load_audio(_first(row[sc.audio]), item=ex_id)
            except AudioError as e:
                if on_error != "skip":
                    raise
                report.add(ex_id, str(e))
                continue
            wav = audio_dir / f"{ex_id}.wav"
            atomic_write_bytes(wav, wav_bytes(audio))
            ex.audio, ex.duration = str(wav), round(len(audio) / SAMPLE_RATE, 3)
        out.append(ex)
    return out


def load_source(spec: str, limit: int | None = None, data_dir: str | Path | None = None, **kw) -> list[Example]:
    """One entry point: ``llama_questions``, ``web_questions[:split]``, ``instructions:<name>``,
    ``hf:<id>[:split]`` (needs ``audio_dir=``), or a path to a ``.jsonl`` manifest.

    ``limit``: read only the first N rows; None reads them all. 0, a negative or a fractional
    number is refused (it would otherwise mean "all" to some readers and "none" to others)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"source {spec!r}: limit {limit!r} must be a whole number >= 1 (or null: every row)")
    if spec == "llama_questions":
        return load_llama_questions(data_dir, limit)
    if spec.startswith("web_questions"):
        return load_web_questions(spec.split(":", 1)[1] if ":" in spec else "test", data_dir, limit)
    if spec.startswith("instructions:"):
        return load_instructions(spec.split(":", 1)[1], data_dir, limit=limit)
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        return load_hf_dataset(name, split or "train", limit=limit, **kw)
    if spec.endswith(".jsonl"):
        if not Path(spec).is_file():
            raise FileNotFoundError(f"manifest {spec} not found" + (" (it is a folder)" if Path(spec).is_dir() else "")
                                    + ": check the path, or build one with `omnishift data ...`")
        rows = read_manifest(spec)[:limit] if limit is not None else read_manifest(spec)
        if not rows:
            raise ValueError(f"manifest {spec} has no rows: nothing to read")
        return rows
    raise ValueError(f"unknown data source {spec!r}: use llama_questions, web_questions[:split], "
                     "instructions:<name>, hf:<id>[:split] or a .jsonl manifest path")


def source_fingerprint(spec: str, limit: int | None = None, data_dir: str | Path | None = None) -> str:
    """A source by content: every row's id, text, response, answers and audio bytes (what a stage
    that reads it computes from), so that an edited manifest or recording is never mistaken for
    the one a finished unit was made from."""
    from omnishift.fingerprint import fingerprint
    from omnishift.reuse import content_sha256

    rows = load_source(spec, limit=limit, data_dir=data_dir)
    return fingerprint([[e.id, e.text, e.response, e.answers, content_sha256(e.audio) if e.audio else None]
                        for e in rows])
