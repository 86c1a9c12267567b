"""The `harness report` and `harness compare` commands (added to the CLI by harness.cli)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> int:
    from reports.build import DEFAULT_UI, write_report
    from reports.sweep_data import locate

    folder = locate(args.sweep, tracking_uri=args.tracking_uri)
    path = write_report(folder, out=args.out, ui_url=args.mlflow_ui or DEFAULT_UI)
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Prints the comparison; exits 1 when a trial regressed beyond the noise, 2 when none could be compared."""
    from reports.compare import compare, compare_markdown, exit_status
    from reports.sweep_data import locate

    a, b = (locate(ref, tracking_uri=args.tracking_uri) for ref in (args.a, args.b))
    comparison = compare(a, b, tolerance=args.tolerance)
    text = compare_markdown(a, b, comparison)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return exit_status(comparison)


def add_commands(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="write report.md and plots for a finished sweep (from its files)")
    report.add_argument("sweep", help="sweep folder, sweep name under outputs/, or MLflow parent run id")
    report.add_argument("--out", help="report folder (default <sweep>/report)")
    report.add_argument(
        "--mlflow-ui", help="MLflow UI address for the run links (default http://127.0.0.1:5000)"
    )
    report.add_argument("--tracking-uri", help="MLflow store to resolve a run id in (default as for sweeps)")
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser(
        "compare",
        help="two sweeps trial by trial: speed ratio B/A with interval; exit 1 on a regression, 2 when no trial "
        "could be compared (each one not compared is listed with why), 0 otherwise",
    )
    compare.add_argument("a", help="the reference sweep (folder, name under outputs/ or MLflow run id)")
    compare.add_argument("b", help="the sweep to judge against it")
    compare.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="ignore changes smaller than this fraction, e.g. 0.02 (default %(default)s)",
    )
    compare.add_argument("--out", help="also write the Markdown table to this file")
    compare.add_argument("--tracking-uri", help="MLflow store to resolve run ids in")
    compare.set_defaults(func=cmd_compare)
