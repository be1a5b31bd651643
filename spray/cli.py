"""The ``spray`` command line. Exit codes: 0 done, 2 bad configuration or input, 1 failed run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .errors import SprayError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _demo(args) -> int:
    from pipelines import demo
    summary = demo.run(Path(args.out))
    print(f"test accuracy {summary['test_accuracy']:.3f}; heatmaps of {summary['explained']} held-out digits "
          f"written to {summary['heatmaps']} ({summary['seconds']} s)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spray", description="Audit image classifiers with LRP and SpRAy.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on the bundled default data",
                          description="Train a small CNN on the bundled digits, explain held-out samples "
                                      "with LRP and write heatmaps.")
    demo.add_argument("--out", default="reports/demo", help="run folder (default: reports/demo)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SprayError as err:
        print(f"spray: error: {err}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
