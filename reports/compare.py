"""The comparison of two runs on a console: formats what `audit.compare.compare()` computed."""
from __future__ import annotations


def _signed(row: dict) -> str:
    from reports.render import fmt_delta

    return fmt_delta(row["delta"], row.get("unit"))


def print_compare(comparison: dict, console, *, limit: int = 40) -> None:
    """A rich table of the rows that moved, regressions first; the rest are counted."""
    from rich.table import Table
    from rich.text import Text

    from reports.render import fmt_value

    rows = comparison.get("rows", [])
    if comparison.get("note"):
        console.print(f"[bold]Nothing compared:[/bold] {comparison['note']}.")
        return
    moved = [r for r in rows if r["direction"] in ("worse", "better")]
    table = Table(title=f"{comparison['base'].get('model', {}).get('spec')} → "
                        f"{comparison['cand'].get('model', {}).get('spec')}")
    for col in ("probe", "metric", "slice", "base", "cand", "change", "beyond CI", "direction"):
        table.add_column(col, justify="right" if col in ("base", "cand", "change") else "left")
    titles = {n: p.get("title", n) for n, p in (comparison.get("probes") or {}).items()}
    for r in moved[:limit]:
        style = {"worse": "bold red", "better": "green"}[r["direction"]]
        table.add_row(titles.get(r["probe"], r["probe"]), r["title"], r["slice"],
                      fmt_value(r["base"], r["unit"]), fmt_value(r["cand"], r["unit"]),
                      _signed(r), "yes" if r["beyond_ci"] else "no",
                      Text(r["direction"].upper() if r["significant"] else r["direction"], style))
    console.print(table)
    console.print(f"{comparison['regressions']} regression(s) and {comparison['improvements']} "
                  f"improvement(s) beyond the CIs; {len(rows)} shared rows, "
                  f"{max(0, len(moved) - limit)} moved rows not shown, "
                  f"{comparison['only_base']} only in base, {comparison['only_cand']} only in "
                  "candidate.")
