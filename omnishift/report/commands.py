"""Report commands: ``omnishift plot-loss`` (training curves of several runs on one figure)."""

from __future__ import annotations

from omnishift.schema import parse_labelled


def cmd_plot_loss(args) -> int:
    from omnishift.report.figures import plot_loss_curves

    print(plot_loss_curves(parse_labelled(args.runs), args.out, window=args.window, title=args.title))
    return 0


def register(commands) -> None:
    """Register ``plot-loss`` and ``report``."""
    s = commands.add_parser("plot-loss", help="training-loss curves of several `omnishift train` runs (PNG)")
    s.add_argument("runs", nargs="+", help="LABEL=RUN_DIR or RUN_DIR (the train out_dir with log.jsonl)")
    s.add_argument("--out", required=True, help="PNG path")
    s.add_argument("--window", type=int, default=10, help="moving-average window in steps")
    s.add_argument("--title", default="")
    s.set_defaults(func=cmd_plot_loss)

    s = commands.add_parser("report", help="rebuild runs/NAME/report.html and report.md from an `omnishift run` folder")
    s.add_argument("run_dir", help="the run folder, e.g. runs/demo")
    s.add_argument("--title", default="", help="report title (default: the experiment's)")
    s.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    """``omnishift report RUN_DIR``: rebuild report.html / report.md from the stage outputs."""
    from omnishift.report.build import build_report

    print(build_report(args.run_dir, title=args.title).resolve())
    return 0
