"""The one rule for reusing a unit of work found on disk: by the fingerprint of what made it.

A unit is a folder that one computation fills: a trained model, an evaluation of one model on one
benchmark in one mode, an importance pass, a transcript set. Before a unit is reused or resumed,
the inputs that would make it now (content hashes of the model folder and of the data, prompt,
decoding and generation settings, the config that matters) are compared with those recorded in
its ``UNIT.json`` when it was started:

- the same fingerprint: the unit is reused when complete, resumed when not;
- another fingerprint, or results with no record: the unit is emptied and redone when the caller
  asked for it (``redo``), and refused otherwise with an error naming the folder, the inputs that
  changed and the fix.

Why: a count of answered items or the existence of a ``final/`` folder says that *something* was
computed, not that the current model and data computed it; reusing by either kept a retrained
model's old answers and an edited benchmark's old verdicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from omnishift.fingerprint import fingerprint
from omnishift.paths import atomic_write_text

UNIT = "UNIT.json"
#: names a folder hash never reads: bookkeeping (the record itself, claims, markers) and half-written temps
BOOKKEEPING = frozenset({UNIT, "CLAIM", "DONE"})

_memo: dict[tuple, str] = {}


class StaleUnitError(ValueError):
    """A unit on disk was made from other inputs than those that would make it now."""


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (memoised in this process by path, inode, size and mtime)."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


def _skipped(name: str, skip: frozenset) -> bool:
    return name in skip or (name.startswith(".") and (".tmp" in name or name.endswith(".old")))


def content_sha256(path: str | Path, skip: frozenset | set = BOOKKEEPING) -> str:
    """sha256 of a file's bytes, or of a folder's tree (relative names and file bytes, sorted);
    names in ``skip`` (files or folders, at any depth) and interrupted-write temps are left out.

    Raises:
        FileNotFoundError: ``path`` does not exist (named).
    """
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: nothing to fingerprint")
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not _skipped(d, frozenset(skip)))
        for name in sorted(f for f in files if not _skipped(f, frozenset(skip))):
            f = Path(root) / name
            h.update(f.relative_to(path).as_posix().encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def read_record(folder: Path) -> dict | None:
    """The unit's record, or None when there is none or it cannot be read (a torn write)."""
    try:
        return json.loads((Path(folder) / UNIT).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, OSError):
        return {}


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _empty(folder: Path) -> None:
    for p in folder.iterdir():
        if p.name != "CLAIM":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def only_unset_added(old, new) -> bool:
    """Whether ``new`` differs from ``old`` only by keys that ``old`` lacks and ``new`` leaves unset
    (None), at any depth.

    Why: a config section that gains an option whose default is None ("not set": the behaviour
    before the option existed) describes the same computation; without this rule every unit made
    before the option was added would count as stale.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) - set(new) or any(new[k] is not None for k in set(new) - set(old)):
            return False
        return all(only_unset_added(old[k], new[k]) for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(only_unset_added(a, b) for a, b in zip(old, new))
    return old == new


def reuse_unit(folder: str | Path, inputs: dict, *, what: str, redo: bool, fix: str,
               complete: Callable[[Path], bool]) -> bool:
    """Decide what to do with ``folder`` before computing it from ``inputs``.

    Args:
        folder: the unit's folder (created if missing).
        inputs: JSON-able description of everything that determines the unit's content.
        what: the unit, for messages (``"evaluation full trivia s2t"``).
        redo: empty and redo a unit made from other inputs (False: refuse it).
        fix: what the user can do when it is refused (``"rerun with --redo evaluate"``).
        complete: ``complete(folder)``: whether a unit made from these inputs is finished; asked
            only after the fingerprints matched.

    Returns:
        True: the unit is complete and made from ``inputs``: reuse it as is. False: compute it
        (from scratch, or resuming what the matching unit holds); the record is written first.

    Raises:
        StaleUnitError: the unit was made from other inputs (or holds results with no record) and
            ``redo`` is False.
    """
    folder = Path(folder)
    record = {"fingerprint": fingerprint(inputs), "inputs": json.loads(json.dumps(inputs, default=str))}
    old = read_record(folder)
    if old is not None and old.get("fingerprint") != record["fingerprint"] and only_unset_added(
            old.get("inputs"), record["inputs"]):
        atomic_write_text(folder / UNIT, json.dumps(record, indent=2) + "\n")  # the same unit, recorded anew
        old = record
    if old is not None and old.get("fingerprint") == record["fingerprint"]:
        return bool(complete(folder))
    # results: anything but bookkeeping and another process's half-written record (ranks start together)
    present = [p.name for p in folder.iterdir() if not _skipped(p.name, BOOKKEEPING)] if folder.is_dir() else []
    if present:
        if not redo:
            why = ("holds results with no record of what made them" if old is None else
                   f"was made from other inputs (changed: {_changed(old.get('inputs', {}), record['inputs'])})" if old
                   else f"holds results whose record {UNIT} is unreadable")
            raise StaleUnitError(f"{folder}: this {what} {why}; {fix}")
        _empty(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / UNIT, json.dumps(record, indent=2) + "\n")
    return False
