"""The fault-injection suite, slow cases included, as one table of cases and outcomes.

CI runs the fast cases (``tests/test_faults.py`` on a tiny project, the address-mode demo, the
killed worker of ``tests/test_explain.py``); this script adds the slow ones (kill -9 of `spray demo`
at seven moments, a worker killed mid-demo, kill -9 in verify and report) and prints every case
with its outcome and time. Each case passes only if it ends in exit 0 with a result equal to an
uninterrupted run (every .h5 dataset and JSON compared), or in exit 1/2 with exactly one message.

    python benchmarks/faults.py [--fast] [-k EXPRESSION]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_faults.py", "tests/test_explain.py::test_cluster_store_equals_lrp_explain_and_survives_a_killed_worker"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the cases CI runs")
    parser.add_argument("-k", default=None, help="pytest -k expression to pick cases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                   "-m", "not slow" if args.fast else "slow or not slow", *TESTS]
        if args.k:
            command += ["-k", args.k]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        code = subprocess.run(command, cwd=ROOT, env=env).returncode
        cases = ET.parse(report).getroot().iter("testcase") if report.exists() else []
        rows = []
        for case in cases:
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                found = case.find(tag)
                if found is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                    if tag == "skipped":
                        outcome += f" ({(found.get('message') or '')[:60]})"
            name = case.get("name").removeprefix("test_").replace("_", " ")
            rows.append((name, outcome, float(case.get("time", 0))))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"\n{'case':<{width}}  {'outcome':<10} seconds")
    for name, outcome, seconds in rows:
        print(f"{name:<{width}}  {outcome:<10} {seconds:7.1f}")
    print(f"{sum(r[1] == 'passed' for r in rows)} of {len(rows)} cases passed in {sum(r[2] for r in rows):.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
