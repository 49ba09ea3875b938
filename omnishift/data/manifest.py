"""The one data format: a JSONL manifest, one example per line.

Every source (local files, ``../shared/data``, HF datasets, synthesized speech) becomes this::

    {"id": "llamaq_1",                       # unique within the file
     "text": "What is the capital of France?",   # the spoken prompt, as text
     "audio": "wavs/llamaq_1.wav",           # optional; relative to the manifest's folder, or absolute
     "response": "Paris is the capital.",    # optional; the training target
     "answers": ["Paris"],                   # optional; reference answers for QA scoring
     "duration": 2.41}                       # optional; seconds of audio

Other keys are kept in ``meta`` and written back unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from omnishift.paths import atomic_write_text

log = logging.getLogger(__name__)
FIELDS = ("id", "text", "audio", "response", "answers", "duration")


@dataclass
class Example:
    """One manifest row."""

    id: str
    text: str
    audio: str | None = None
    response: str | None = None
    answers: list[str] = field(default_factory=list)
    duration: float | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict, base_dir: str | Path | None = None, where: str = "") -> "Example":
        """Build from a manifest row; relative audio resolves against ``base_dir``."""
        for key in ("id", "text"):
            if key not in d or d[key] is None or (key == "id" and str(d[key]) == ""):
                raise ValueError(f"{where}: missing required field {key!r}; every row needs 'id' and 'text'")
        answers = d.get("answers") or []
        if isinstance(answers, str):
            answers = [answers]
        audio = d.get("audio")
        if audio and base_dir is not None and not os.path.isabs(audio):
            audio = str(Path(base_dir) / audio)
        return cls(id=str(d["id"]), text=str(d["text"]), audio=audio, response=d.get("response"),
                   answers=[str(a) for a in answers], duration=d.get("duration"),
                   meta={k: v for k, v in d.items() if k not in FIELDS})

    def to_json(self, base_dir: str | Path | None = None) -> dict:
        """Row dict; audio under ``base_dir`` is written relative to it."""
        audio = self.audio
        if audio and base_dir is not None:
            try:
                audio = str(Path(audio).resolve().relative_to(Path(base_dir).resolve()))
            except ValueError:
                pass
        row = {"id": self.id, "text": self.text, "audio": audio, "response": self.response,
               "answers": self.answers, "duration": self.duration}
        return {**row, **self.meta}


def read_manifest(path: str | Path) -> list[Example]:
    """Read a JSONL manifest; errors name the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found")
    examples, seen = [], {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                 "save the manifest as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}); one JSON object per line") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            ex = Example.from_json(row, path.parent, where)
            if ex.id in seen:
                raise ValueError(f"{where}: duplicate id {ex.id!r} (first at line {seen[ex.id]}); ids must be unique")
            seen[ex.id] = lineno
            examples.append(ex)
    return examples


def write_manifest(path: str | Path, examples: Iterable[Example]) -> Path:
    """Write atomically; audio paths under the manifest's folder become relative."""
    path = Path(path)
    lines = [json.dumps(e.to_json(path.parent), ensure_ascii=False) for e in examples]
    return atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


class SkipReport:
    """Counts items skipped on request, with reasons, so nothing is dropped silently."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, item: str, reason: str) -> None:
        log.warning("skipping %s: %s", item, reason)
        self.items.append((item, reason))

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def by_reason(self) -> dict[str, int]:
        """Counts per reason kind (the error text after the item name)."""
        return dict(Counter(r.split(": ", 1)[-1].split(";")[0] for _, r in self.items))

    def summary(self) -> str:
        if not self.items:
            return "skipped 0 items"
        return f"skipped {self.count} items: " + ", ".join(f"{n}x {r}" for r, n in self.by_reason.items())


def load_examples_audio(examples: Iterable[Example], on_error: str = "raise",
                        report: SkipReport | None = None) -> Iterator[tuple[Example, "object"]]:
    """Yield ``(example, audio)`` with validated 16 kHz audio; ``on_error='skip'`` counts bad items."""
    from omnishift.data.audio import AudioError, load_audio

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    for ex in examples:
        if not ex.audio:
            err = AudioError(f"item {ex.id!r}: no audio path; synthesize it with `omnishift data synth`")
        else:
            try:
                yield ex, load_audio(ex.audio, item=ex.id)
                continue
            except AudioError as e:
                err = e
        if on_error == "raise":
            raise err
        (report if report is not None else SkipReport()).add(ex.id, str(err))
