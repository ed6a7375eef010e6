"""Where the test suite's time goes: per-file totals of a pytest JUnit XML report.

    python -m pytest -q --junitxml=/tmp/junit.xml            # or make test ARGS=--junitxml=...
    python scripts/test_times.py /tmp/junit.xml               # per file, slowest first
    python scripts/test_times.py /tmp/junit.xml --top 30      # the 30 slowest files

Prints one row per test file: seconds (setup + call + teardown of its tests, as pytest records
them in the report), its share of the total, the number of tests, and how many were skipped.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def per_file(report: Path) -> dict[str, dict]:
    files: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "tests": 0, "skipped": 0})
    for case in ET.parse(report).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        while len(parts) > 1 and parts[-1][:1].isupper():  # a test class inside the module
            parts.pop()
        name = case.get("file") or "/".join(parts) + ".py"
        row = files[name]
        row["seconds"] += float(case.get("time") or 0.0)
        row["tests"] += 1
        row["skipped"] += case.find("skipped") is not None
    return dict(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="pytest --junitxml file")
    parser.add_argument("--top", type=int, default=None, help="only the N slowest files")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"{args.report}: no such file; write one with pytest --junitxml={args.report}")
    files = sorted(per_file(args.report).items(), key=lambda kv: -kv[1]["seconds"])
    total = sum(row["seconds"] for _, row in files) or 1.0
    print(f"{'seconds':>8} {'share':>6} {'tests':>6} {'skipped':>7}  file")
    for name, row in files[: args.top]:
        print(f"{row['seconds']:8.1f} {row['seconds'] / total:6.1%} {row['tests']:6d} {row['skipped']:7d}  {name}")
    print(f"{total:8.1f} {1:6.0%} {sum(r['tests'] for _, r in files):6d} "
          f"{sum(r['skipped'] for _, r in files):7d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
