"""The tables ``scripts/bench.py`` prints from its results."""

from __future__ import annotations

from benchmarks import section


def fmt_rate(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def print_tables(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    m = results["machine"]
    console.print(f"[bold]sslkit bench[/] {results['created']}  device={m['device']}  "
                  f"torch={m['torch']}  threads={m['torch_threads']}  cpus={m['cpu_count']}  "
                  f"load at start={m['loadavg_start']}{'  (--quick)' if results['quick'] else ''}")
    for key, sec in results["sections"].items():
        table = Table(title=sec["title"], title_justify="left", show_lines=False)
        custom = getattr(section(key), "table", None)
        if custom is not None:
            cols, cells = custom(sec)
            for i, col in enumerate(cols):
                table.add_column(col, justify="left" if i == 0 else "right")
            for row in cells:
                table.add_row(*row)
        elif key == "heads":
            batches = sec["settings"]["batches"]
            table.add_column("head")
            table.add_column("extras")
            for b in batches:
                table.add_column(f"B={b} ms (median)", justify="right")
                table.add_column(f"B={b} x InfoNCE", justify="right")
            by_head: dict[str, dict] = {}
            for row in sec["rows"]:
                by_head.setdefault(row["head"], {})[row["batch"]] = row
            for head, per_b in by_head.items():
                cells = [head, next(iter(per_b.values())).get("extras") or ""]
                for b in batches:
                    row = per_b.get(b, {})
                    if row.get("error"):
                        cells += ["error", row["error"][:18]]
                        continue
                    cells.append(f"{row['seconds_median'] * 1e3:.1f}" if row.get("seconds") else "-")
                    r = row.get("time_ratio_to_infonce")
                    cells.append(f"{r:.2f}" if r is not None else "-")
                table.add_row(*cells)
        else:
            ratio_key = section(key).RATIO_KEY
            table.add_column("benchmark")
            unit = next((r["unit"] for r in sec["rows"] if "unit" in r), "images/s")
            table.add_column(f"{unit} median", justify="right")
            table.add_column(f"{unit} best", justify="right")
            table.add_column(ratio_key.replace("_", " ") + " (median | best)", justify="right")
            table.add_column("load 1m", justify="right")
            for row in sec["rows"]:
                if row.get("error"):
                    table.add_row(row["name"], "error", row["error"][:40], "", "")
                    continue
                r = row.get(ratio_key)
                ratio = f"{r:.3f} | {row[ratio_key + '_best']:.3f}" if r is not None else "(reference)"
                if key == "trainer" and r is not None:
                    ratio += f"  overhead {row['overhead']:+.1%}"
                loads = row["context"]["loadavg_1m_at_repeats"]
                table.add_row(row["name"], fmt_rate(row.get("throughput_median")),
                              fmt_rate(row.get("throughput_best")), ratio,
                              f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-")
        console.print(table)
        note = sec["settings"].get("note")
        reps = sorted({r["repeats"] for r in sec["rows"] if "repeats" in r})
        runs = sorted({r["runs"] for r in sec["rows"] if "runs" in r})
        counts = f"measurements per row={reps} in runs={runs}; " if reps else ""
        console.print(f"  [dim]{key}: {counts}{note}[/]")

