"""The run folder's completion markers, shared by the pipeline (writes) and the report (reads).

A stage is finished when ``RUN/STAGE/DONE`` exists (JSON: when, how long, what it made, or why it
was skipped); nothing else is trusted to say so.
"""

from __future__ import annotations

import json
from pathlib import Path

DONE = "DONE"


def read_marker(run_dir: str | Path, stage: str) -> dict | None:
    """The ``DONE`` marker of ``stage`` in ``run_dir`` (None when the stage has not finished)."""
    f = Path(run_dir) / stage / DONE
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
