"""``omnishift`` command line: every package registers its own commands; this file only lists them.

Adding a command: write ``cmd_x(args) -> int`` and its parser in the package's ``commands.py``
``register(commands)``; a new package's ``commands`` module is one line in :data:`COMMAND_MODULES`.
Commands of one kind sit in a group (``data …``, ``align …``, ``eval …``) that several packages may
add to (:meth:`Commands.group`); a group may name the sub-command its bare form runs
(``omnishift align cpu_listen`` is ``omnishift align run cpu_listen``). Older flat names
(``eval-aligned``) stay accepted through :meth:`Commands.alias`.
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

#: Modules with ``register(commands)``, in the order their commands appear in ``--help``.
COMMAND_MODULES = [
    "omnishift.models.commands",      # models prepare
    "omnishift.data.commands",        # data synth, data stage1
    "omnishift.evaluate.commands",    # ask, eval qa|table|ablate-rank|listening
    "omnishift.train.commands",       # train
    "omnishift.align.commands",       # data align, align run|ls, eval aligned|ctc
    "omnishift.importance.commands",  # importance ...
    "omnishift.report.commands",      # plot-loss, report
    "omnishift.pipeline.commands",    # run, demo
]


class Commands:
    """What each package's ``register`` receives: top-level commands, groups and old names."""

    def __init__(self, sub):
        self.sub = sub
        self.groups: dict[str, argparse._SubParsersAction] = {}
        self.defaults: dict[str, str] = {}
        self.aliases: dict[str, list[str]] = {}

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        """A top-level command (``omnishift NAME``)."""
        return self.sub.add_parser(name, **kwargs)

    def group(self, name: str, help: str | None = None, default: str | None = None) -> argparse._SubParsersAction:
        """The sub-commands of ``omnishift NAME …``, made on first use (``help`` is then required).

        Args:
            default: the sub-command that ``omnishift NAME ARG …`` runs when ``ARG`` names none.
        """
        if name not in self.groups:
            if not help:
                raise ValueError(f"command group {name!r} is made here: give it a help line")
            g = self.sub.add_parser(name, help=help)
            self.groups[name] = g.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
        if default:
            self.defaults[name] = default
        return self.groups[name]

    def alias(self, old: str, *new: str) -> None:
        """Keep ``omnishift OLD …`` working as ``omnishift NEW… …``."""
        self.aliases[old] = list(new)

    def expand(self, argv: list[str]) -> list[str]:
        """``argv`` with an old name replaced and a group's default sub-command filled in."""
        argv = list(argv)
        i = next((j for j, a in enumerate(argv) if not a.startswith("-")), None)
        if i is None:
            return argv
        argv[i:i + 1] = self.aliases.get(argv[i], [argv[i]])
        head = argv[i]
        if head in self.defaults:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt not in self.groups[head].choices and nxt not in ("-h", "--help"):
                argv.insert(i + 1, self.defaults[head])
        return argv


def build_commands() -> tuple[argparse.ArgumentParser, Commands]:
    p = argparse.ArgumentParser(
        prog="omnishift",
        description="Where speech fine-tuning makes an LLM forget text, and how to prevent it.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = Commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    defaults = ", ".join(f"`{g} ARG` = `{g} {d} ARG`" for g, d in commands.defaults.items())
    old = ", ".join(f"{o} = {' '.join(n)}" for o, n in commands.aliases.items())
    p.epilog = f"Shorter forms: {defaults}. Older names, still accepted: {old}."
    return p, commands


def build_parser() -> argparse.ArgumentParser:
    return build_commands()[0]


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_commands()
    args = parser.parse_args(commands.expand(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    name = " ".join(filter(None, [args.command, getattr(args, f"{args.command}_command", None)]))
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input or a file system that refuses: one line, no traceback
        print(f"omnishift {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
