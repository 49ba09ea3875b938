"""keep_freed_memory: freed step-sized tensors are reused instead of faulted in again."""

import json
import os
import platform
import subprocess
import sys

import pytest

_LOOP = """
import json, resource, sys, torch
from omnishift.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for i in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(10 << 20)   # 40 MB: above the most glibc's dynamic mmap threshold grows to (32 MB)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": sum(faults[-10:])}))  # the steady state: the last 10 steps
"""


def _faults(mode: str) -> dict:
    # without PyTorch's huge pages (the omnishift CLI, imported by other tests, sets them for this process):
    # a huge page is one fault for 2 MB, which would hide the 4 KB faults this test counts
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", _LOOP, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    pages = (40 << 20) // 4096
    assert default["faults"] >= 9 * pages        # each 40 MB tensor faults its pages in anew
    assert kept["applied"] is True
    assert kept["faults"] <= pages // 10         # they reuse the pages of the ones freed before


def test_it_is_applied_once():
    from omnishift import allocator

    first = allocator.keep_freed_memory()
    assert allocator.keep_freed_memory() is first
