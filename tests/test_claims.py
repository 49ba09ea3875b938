"""Unit claims: one live process per unit, stale claims taken over, waiting until a claim is free."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

from omnishift.claims import CLAIM, claimed, holder, release, try_claim


def test_claim_is_exclusive_and_released(tmp_path):
    unit = tmp_path / "row" / "bench" / "t2t"
    assert try_claim(unit) and holder(unit)["pid"] == os.getpid()
    assert not try_claim(unit)  # held by a live process (this one)
    release(unit)
    assert holder(unit) is None and try_claim(unit)


def test_claim_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    unit = tmp_path / "u"
    unit.mkdir()
    (unit / CLAIM).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    assert holder(unit) is None and try_claim(unit)
    assert json.loads((unit / CLAIM).read_text())["pid"] == os.getpid()
    # a claim from another machine is respected (its process cannot be checked from here)
    other = tmp_path / "v"
    other.mkdir()
    (other / CLAIM).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert not try_claim(other)


def test_claimed_waits_or_skips(tmp_path):
    unit = tmp_path / "u"
    assert try_claim(unit)
    with claimed(unit, wait=False) as mine:
        assert mine is False
    waited = []
    threading.Timer(0.3, release, [unit]).start()
    with claimed(unit, wait=True, poll_s=0.05, on_wait=waited.append) as mine:
        assert mine is True and holder(unit)["pid"] == os.getpid()
    assert len(waited) == 1 and waited[0]["pid"] == os.getpid()
    assert not (unit / CLAIM).exists()  # released on exit
