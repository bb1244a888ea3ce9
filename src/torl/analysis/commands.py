"""`torl report`: plots, behaviour analytics and an HTML trajectory browser for a run or eval dir."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="plots, analytics and an HTML trajectory browser for a training run or an eval output dir",
        description="Turn a training run dir (metrics.jsonl, samples/, the held-out eval_before/after) or a `torl eval` "
        "output dir into PNG plots, behaviour analytics and a self-contained HTML page to browse trajectories, "
        "written to RUN_DIR/report/index.html unless --out says otherwise.",
    )
    p.add_argument("run_dir", help="training run dir or `torl eval` output dir")
    p.add_argument("--out", help="output dir (default: RUN_DIR/report)")
    p.add_argument("--max-samples", type=int, default=3000,
                   help="trajectories embedded in the HTML page, spread over steps/benchmarks (0 = all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from torl.analysis.report import build_report

    files = build_report(args.run_dir, args.out, max_samples=args.max_samples)
    print(f"report: {files[0]}")
    for path in files[1:]:
        print(f"  {path}")
    return 0
