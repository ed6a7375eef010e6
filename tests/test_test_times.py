"""scripts/test_times.py: per-file totals of a pytest JUnit report (docs/testing.md)."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from test_times import main, per_file  # noqa: E402


def test_per_file_totals_and_classes_fold_into_their_file(tmp_path, capsys):
    report = tmp_path / "junit.xml"
    report.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.test_a" name="t1" time="1.5"/>'
        '<testcase classname="tests.test_a.TestX" name="t2" time="0.5"><skipped/></testcase>'
        '<testcase classname="tests.losses.test_b" name="t3" time="3"/>'
        '</testsuite></testsuites>')
    assert per_file(report) == {"tests/test_a.py": {"seconds": 2.0, "tests": 2, "skipped": 1},
                                "tests/losses/test_b.py": {"seconds": 3.0, "tests": 1, "skipped": 0}}
    assert main([str(report)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].endswith("tests/losses/test_b.py") and "60.0%" in lines[1]
    assert lines[-1].split()[:3] == ["5.0", "100%", "3"]
