"""Spawned worker processes for the alignment set builder and the CTC decoder.

Both run CPU-bound work (synthesis + encoding, beam search with the LLM) in single-threaded
processes. Two lessons are kept here, once:

* a ``ProcessPoolExecutor``, not ``mp.Pool``: a worker that cannot start (an encoder or model that
  does not load) breaks the pool with an error instead of being respawned forever;
* workers end with their parent: a build or decode stopped with ``kill`` (the usual way to stop a
  background job) left its spawned workers running, orphaned, at full CPU for the rest of their
  shard, slowing whatever ran next (measured: two orphans held both cores after ``align-data``
  was killed). Each worker watches its parent's pid and exits when it changes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable

PARENT_POLL_S = 0.5


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_S)
        if os.getppid() != parent:  # re-parented: the process that spawned us is gone
            os._exit(1)


def _start(init: Callable, parent: int, *args) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()
    init(*args)


@contextmanager
def spawn_pool(workers: int, init: Callable, initargs: tuple = ()):
    """A ``map`` over ``workers`` spawned processes, each set up once with ``init(*initargs)``.

    Args:
        workers: processes (>= 1).
        init: a module-level function (it is pickled by reference).
        initargs: its arguments.

    Yields:
        The executor's ``map``.
    """
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_start,
                             initargs=(init, os.getpid(), *initargs)) as pool:
        yield pool.map
