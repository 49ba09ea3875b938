"""A unit of a stage is worked on by one process at a time: an exclusive ``CLAIM`` file per unit.

Shards split a stage's units by index, but nothing stops two processes from being given the same
unit (a second set of shards with another N to use freed cores, a plain run started while shards
still work); two evaluators appending to one ``items.jsonl`` would duplicate answers. So a process
creates ``UNIT/CLAIM`` with ``O_EXCL`` (atomic on a local or NFS-v3+ filesystem) before working on
the unit and removes it afterwards. A claim left by a process that died on this machine is taken
over; one from another machine is respected until removed by hand. A process that holds a claim
may claim the folder again (the inner claim neither waits nor releases).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

CLAIM = "CLAIM"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(folder: Path) -> dict | None:
    """Who holds ``folder``'s claim (None: nobody, or a dead process of this machine)."""
    f = Path(folder) / CLAIM
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, OSError):  # torn write: the writer died between create and write
        return None
    if doc.get("host") == socket.gethostname() and not _alive(int(doc.get("pid", -1))):
        return None
    return doc


def try_claim(folder: Path) -> bool:
    """Claim ``folder`` for this process; False when a live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / CLAIM
    for _ in range(2):
        try:
            fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if holder(folder) is not None:
                return False
            f.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}, out)
        return True
    return False


_HELD: set[str] = set()  # folders a `claimed` block of this process holds (inner claims are re-entrant)


def release(folder: Path) -> None:
    (Path(folder) / CLAIM).unlink(missing_ok=True)


@contextlib.contextmanager
def claimed(folder: Path, wait: bool, poll_s: float = 10.0, on_wait=None):
    """``with claimed(unit, wait) as mine:`` -- ``mine`` is False only when ``wait`` is False and
    another live process holds the unit; with ``wait`` the call blocks until the claim is ours
    (``on_wait(holder)`` is called once when it has to wait)."""
    key = str(Path(folder).resolve())
    if key in _HELD:  # an outer block of this process holds it (a pipeline unit whose evaluation claims it again)
        yield True
        return
    told = False
    while not try_claim(folder):
        if not wait:
            yield False
            return
        if not told and on_wait is not None:
            on_wait(holder(folder))
            told = True
        time.sleep(poll_s)
    _HELD.add(key)
    try:
        yield True
    finally:
        _HELD.discard(key)
        release(folder)
