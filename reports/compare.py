"""The comparison of two runs on a console: formats what `audit.compare.compare()` computed."""
from __future__ import annotations


def _signed(row: dict) -> str:
    from reports.render import fmt_delta

    return fmt_delta(row["delta"], row.get("unit"))


def fmt_p(p) -> str:
    return "–" if p is None else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def evidence(row: dict) -> str:
    """What decided the row, in words: the paired test's counts and p, or the CIs."""
    from reports.render import fmt_delta

    p = row.get("paired")
    if not p:
        return "CIs apart" if row.get("beyond_ci") else "CIs overlap"
    lo, hi = p["delta_ci"]
    return (f"paired: {p['moved_in']:,} in, {p['moved_out']:,} out of {p['n']:,}; McNemar "
            f"p = {fmt_p(p['p_adjusted'])} (Holm); change CI {fmt_delta(lo, row.get('unit'))} "
            f"to {fmt_delta(hi, row.get('unit'))}")


def paired_line(comparison: dict) -> str | None:
    """One line on how the rows were tested: image by image, or as independent samples."""
    section = comparison.get("paired") or {}
    if not section:
        return None
    family = (section.get("method") or {}).get("family", 0)
    lead = (f"Paired on the same images: {family} row(s) tested by McNemar's exact test, Holm "
            f"over the {family}." if section.get("used") else "")
    return " ".join(x for x in (lead, section.get("note") and section["note"][0].upper()
                                + section["note"][1:] + ".") if x) or None


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
    for col in ("probe", "metric", "slice", "base", "cand", "change", "evidence", "direction"):
        table.add_column(col, justify="right" if col in ("base", "cand", "change") else "left")
    titles = {n: p.get("title", n) for n, p in (comparison.get("probes") or {}).items()}
    for r in moved[:limit]:
        style = {"worse": "bold red", "better": "green"}[r["direction"]]
        table.add_row(titles.get(r["probe"], r["probe"]), r["title"], r["slice"],
                      fmt_value(r["base"], r["unit"]), fmt_value(r["cand"], r["unit"]),
                      _signed(r), evidence(r),
                      Text(r["direction"].upper() if r["significant"] else r["direction"], style))
    console.print(table)
    line = paired_line(comparison)
    if line:
        console.print(line, markup=False)
    console.print(f"{comparison['regressions']} regression(s) and {comparison['improvements']} "
                  f"improvement(s) beyond noise; {len(rows)} shared rows, "
                  f"{max(0, len(moved) - limit)} moved rows not shown, "
                  f"{comparison['only_base']} only in base, {comparison['only_cand']} only in "
                  "candidate.")
