"""The README's tables name what the configs ship: every ``configs/loss/*.yaml`` is a row of its
"Loss heads" table (a new head is listed where a newcomer looks first)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_every_loss_head():
    text = (ROOT / "README.md").read_text()
    table = text.split("### Loss heads", 1)[1].split("\n\n", 2)[1]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    shipped = {p.stem for p in (ROOT / "configs" / "loss").glob("*.yaml")}
    assert shipped - listed == set(), f"README.md's Loss heads table lacks {sorted(shipped - listed)}"
    assert listed - shipped == set(), f"README.md lists heads with no config: {sorted(listed - shipped)}"
