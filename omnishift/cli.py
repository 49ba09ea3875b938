"""``omnishift`` command line: every package registers its own commands; this file only lists them.

Adding a command: write ``cmd_x(args) -> int`` and its parser in the package's ``commands.py``
``register(sub)``; a new package's ``commands`` module is one line in :data:`COMMAND_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Huge pages for PyTorch's large CPU tensors, read once by torch at its first allocation, so set before any
# command module imports torch. Where the kernel's THP mode is "madvise", each step's fresh activations
# otherwise fault in 4 KB at a time: an alignment step spent as much system as user time, and this made it
# 1.34-1.39x faster (docs/benchmarks.md). A value the user set (e.g. 0) wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

#: Modules with ``register(subparsers)``, in the order their commands appear in ``--help``.
COMMAND_MODULES = [
    "omnishift.models.commands",      # models prepare
    "omnishift.data.commands",        # synth
    "omnishift.evaluate.commands",    # ask, eval, eval-table, ablate-rank, eval-listening
    "omnishift.train.commands",       # train
    "omnishift.align.commands",       # align-data, align, eval-ctc
    "omnishift.importance.commands",  # importance ...
    "omnishift.report.commands",      # plot-loss, report
    "omnishift.pipeline.commands",    # run, demo
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="omnishift",
        description="Where speech fine-tuning makes an LLM forget text, and how to prevent it.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input or a file system that refuses: one line, no traceback
        print(f"omnishift {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
