"""Report commands: ``omnishift plot-loss`` and ``plot-drift`` (curves of several runs on one figure)."""

from __future__ import annotations

from omnishift.schema import parse_labelled


def cmd_plot_loss(args) -> int:
    from omnishift.report.figures import plot_loss_curves

    print(plot_loss_curves(parse_labelled(args.runs), args.out, window=args.window, title=args.title))
    return 0


def cmd_plot_drift(args) -> int:
    from pathlib import Path

    from omnishift.paths import atomic_write_text
    from omnishift.report.forgetting import forgetting_table, plot_forgetting_curves
    from omnishift.tables import to_markdown

    runs = parse_labelled(args.runs)
    png = plot_forgetting_curves(runs, args.out, title=args.title)
    table = to_markdown(forgetting_table(runs, args.reference))
    atomic_write_text(Path(args.out).with_suffix(".md"), table + "\n")
    print(table)
    print(png)
    return 0


def register(commands) -> None:
    """Register ``plot-loss``, ``plot-drift`` and ``report``."""
    s = commands.add_parser("plot-loss", help="training-loss curves of several `omnishift train` runs (PNG)")
    s.add_argument("runs", nargs="+", help="LABEL=RUN_DIR or RUN_DIR (the train out_dir with log.jsonl)")
    s.add_argument("--out", required=True, help="PNG path")
    s.add_argument("--window", type=int, default=10, help="moving-average window in steps")
    s.add_argument("--title", default="")
    s.set_defaults(func=cmd_plot_loss)

    s = commands.add_parser("plot-drift", help="forgetting curves of several `omnishift train` runs trained with a "
                                               "drift probe (PNG), and their last points paired with a reference")
    s.add_argument("runs", nargs="+", help="LABEL=RUN_DIR or RUN_DIR (a train out_dir with probes/)")
    s.add_argument("--out", required=True, help="PNG path (a Markdown table is written beside it)")
    s.add_argument("--reference", help="label the others are compared with (default: the first)")
    s.add_argument("--title", default="")
    s.set_defaults(func=cmd_plot_drift)

    s = commands.add_parser("report", help="rebuild runs/NAME/report.html and report.md from an `omnishift run` folder")
    s.add_argument("run_dir", help="the run folder, e.g. runs/demo")
    s.add_argument("--title", default="", help="report title (default: the experiment's)")
    s.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    """``omnishift report RUN_DIR``: rebuild report.html / report.md from the stage outputs."""
    from omnishift.report.build import build_report

    print(build_report(args.run_dir, title=args.title).resolve())
    return 0
