"""An `audit.table.build_table()` result as a file: the sortable HTML page (reports.render)
or a CSV. Formatting only: every number is the one build_table read from a results.json.

The CSV keeps the raw ids: one row per run, and per column `<id> value`, `<id> ci_low`,
`<id> ci_high` and `<id> n`, where <id> is the column's id ("fairface_label_bias.
non_human_rate[label_set=default]"); values as they are in results.json. Text that a
spreadsheet would run as a formula is prefixed with ' (reports.charts.csv_cell).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from audit.errors import UserError
from reports.charts import csv_cell

NUMBERS = ("value", "ci_low", "ci_high", "n")
RUN_COLUMNS = ("name", "model", "arch", "sha256", "finished", "data_fingerprint")


def table_csv(table: dict) -> str:
    roles = list(dict.fromkeys(role for r in table["runs"] for role in r.get("data") or {}))
    header = ["run" if k == "name" else k for k in RUN_COLUMNS] + [f"data:{role}" for role in roles]
    header += [f"{c['id']} {k}" for c in table["columns"] for k in NUMBERS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in header])
    for run in table["runs"]:
        cells = [run.get(k) for k in RUN_COLUMNS] + [(run.get("data") or {}).get(r) for r in roles]
        cells += [(run["cells"].get(c["id"]) or {}).get(k) for c in table["columns"] for k in NUMBERS]
        writer.writerow(["" if v is None else csv_cell(v) for v in cells])
    return buf.getvalue()


def _write_csv(table: dict, out: Path) -> Path:
    from audit.io import atomic_write_text

    return atomic_write_text(out, table_csv(table))


def _write_html(table: dict, out: Path) -> Path:
    from reports.render import render_table

    return render_table(table, out)


FORMATS = {".html": _write_html, ".csv": _write_csv}


def check_format(out: Path) -> None:
    """Before any results.json is read: the extension picks the format."""
    if Path(out).suffix.lower() not in FORMATS:
        raise UserError(f"{out}: unknown table format {Path(out).suffix or '(no extension)'!r}; "
                        f"use {' or '.join(FORMATS)}")


def write_table(table: dict, out: Path) -> Path:
    check_format(out)
    try:
        return FORMATS[Path(out).suffix.lower()](table, Path(out))
    except OSError as e:  # full disk, read-only mount, permission: one line, not a traceback
        raise UserError(f"{out}: could not write the table ({e.strerror or e})") from None
