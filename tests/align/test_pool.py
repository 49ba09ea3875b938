"""Spawned workers end with their parent (a killed build or decode must not leave them running)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

PARENT = textwrap.dedent("""
    import os, sys, time
    from omnishift.align.pool import spawn_pool

    def pid(_):
        return os.getpid()

    if __name__ == "__main__":
        with spawn_pool(2, time.sleep, (0,)) as pmap:
            print(" ".join(str(p) for p in set(pmap(pid, range(8)))), flush=True)
            os._exit(0)  # like SIGKILL: no executor shutdown, the workers are orphaned
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_exit_when_their_parent_dies(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=os.getcwd())
    workers = [int(p) for p in out.stdout.split()]
    assert workers and os.getpid() not in workers, out.stderr
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), f"orphaned workers still running: {workers}"


def test_pool_maps_in_order():
    from omnishift.align.pool import spawn_pool

    with spawn_pool(2, time.sleep, (0,)) as pmap:
        assert list(pmap(abs, [-3, 2, -1])) == [3, 2, 1]
