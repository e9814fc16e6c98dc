"""Person sources (issue 17.1): one row per annotated PERSON, its image the crop of its box.

FACET's release layout (Gustafson et al. 2023): a folder with `annotations/annotations.csv` and
the images under `imgs_1/`, `imgs_2/`, `imgs_3/` (any subfolder: a file is found by its
`filename`). Each CSV row is one person of one image: `filename`, `person_id`, `class1`
(`class2`), `bounding_box` (a JSON string {"x", "y", "width", "height"} in pixels), and the
annotators' votes as 0/1 or count columns. The derived columns, as strings:

- `label` = class1 (FACET's class string, e.g. "disk_jockey");
- `gender_presentation`: masculine | feminine | non-binary when exactly one of
  `gender_presentation_masc/_fem/_non_binary` is 1, else unknown (`_na`, none, or several);
- `age_group`: young | middle | older by `age_presentation_*` the same way, else unknown;
- `skin_tone`: the Monk tone 1-10 most annotators chose (`skin_tone_1..10` are counts); a tie
  goes to the lighter (lower) tone; unknown when no tone was chosen (only `skin_tone_na`);
- `skin_tone_group`: the tone's bucket, SKIN_TONE_GROUPS (lighter 1-3, medium 4-6, darker 7-10).

The same derivation applies to any persons source whose table carries FACET's raw columns (a
parquet export); a source that already has the derived columns (an image folder of crops with
`label`, `gender_presentation`, ...) is read as it is.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from audit.errors import UserError

log = logging.getLogger(__name__)

ANNOTATIONS = Path("annotations") / "annotations.csv"
FACET_REQUIRED = ("filename", "class1", "bounding_box")
# derived column -> (FACET's 0/1 columns, the value each stands for); none or several: unknown
ONE_HOT = {
    "gender_presentation": {"gender_presentation_masc": "masculine", "gender_presentation_fem": "feminine",
                            "gender_presentation_non_binary": "non-binary", "gender_presentation_na": None},
    "age_group": {"age_presentation_young": "young", "age_presentation_middle": "middle",
                  "age_presentation_older": "older", "age_presentation_na": None},
}
SKIN_TONES = tuple(f"skin_tone_{t}" for t in range(1, 11))
SKIN_TONE_COLUMNS = SKIN_TONES + ("skin_tone_na",)
# Monk tones -> the buckets rows are grouped by: coarse enough that a bucket keeps images per
# class. Not FACET's own table (it reports tones one by one); the lighter/medium/darker split.
SKIN_TONE_GROUPS = {**{t: "1-3" for t in (1, 2, 3)}, **{t: "4-6" for t in (4, 5, 6)},
                    **{t: "7-10" for t in (7, 8, 9, 10)}}
UNKNOWN = "unknown"


def is_facet(path: Path) -> bool:
    return (Path(path) / ANNOTATIONS).is_file()


class CropReader:
    """Raw row -> the bytes of its person's image file, plus `box(i, data)`: the crop rectangle
    (left, top, right, bottom) clamped to the image; each file is decoded once for its size."""

    def __init__(self, csv: Path, files: list, boxes: list):
        self.csv, self.files, self.boxes, self._sizes = csv, files, boxes, {}

    def __call__(self, i: int) -> bytes:
        from audit.data import read_image_file

        if self.files[i] is None:
            raise OSError("no such image file under the folder")
        return read_image_file(self.files[i])

    def box(self, i: int, data: bytes) -> tuple:
        from audit.data import decode_image

        path = self.files[i]
        if path not in self._sizes:
            self._sizes[path] = decode_image(data).size
        width, height = self._sizes[path]
        x, y, w, h = self.boxes[i]
        box = (max(0, math.floor(x)), max(0, math.floor(y)), min(width, math.ceil(x + w)), min(height, math.ceil(y + h)))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise UserError(f"{self.csv}: line {i + 2}: bounding_box (x={x:g}, y={y:g}, width={w:g}, "
                            f"height={h:g}) lies outside the image {Path(path).name} ({width}x{height})")
        return box


def read_facet(root: Path, parse_csv):
    """FACET's layout -> (table, reader, row ids, the CSV's path), as audit.data's readers give."""
    csv = Path(root) / ANNOTATIONS
    df = parse_csv(csv)
    missing = [c for c in FACET_REQUIRED if c not in df.columns]
    if missing:
        from audit.data import _names

        raise UserError(f"{csv}: missing column(s) {', '.join(missing)} of FACET's annotations; "
                        f"found: {_names(df.columns)}")
    boxes = [_parse_box(text, csv, i) for i, text in enumerate(df["bounding_box"])]
    files = _find_files(Path(root), df["filename"].tolist(), csv)
    ids = df["person_id"] if "person_id" in df else [str(i) for i in range(len(df))]
    paths = [f"{name}#person {pid}" for name, pid in zip(df["filename"], ids)]
    # the derived columns are made by audit.data.load_source, for FACET's table as for any persons table
    table = df.drop(columns=["bounding_box"]).reset_index(drop=True)
    return table, CropReader(csv, files, boxes), paths, str(csv)


def _parse_box(text: str, csv: Path, i: int) -> tuple:
    try:
        box = json.loads(text)
        values = tuple(float(box[k]) for k in ("x", "y", "width", "height"))
    except (ValueError, TypeError, KeyError):
        raise UserError(f"{csv}: line {i + 2}: bounding_box {text[:80]!r} is not a JSON object with "
                        'numeric "x", "y", "width", "height"') from None
    if not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
        raise UserError(f"{csv}: line {i + 2}: bounding_box {text[:80]!r} needs a finite position "
                        "and a width and height above 0")
    return values


def _find_files(root: Path, names: list, csv: Path) -> list:
    """Each filename as a path: under the folder itself, else by its name in any subfolder
    (imgs_1/ .. imgs_3/ in FACET's release); None when nowhere (the row is skipped)."""
    index = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.parent != csv.parent:
            if p.name in index and index[p.name] != p:
                log.warning("%s: %s is in two folders; reading %s", root, p.name, index[p.name])
            index.setdefault(p.name, p)
    out = []
    for name in names:
        if not str(name).strip():
            raise UserError(f"{csv}: line {len(out) + 2}: empty filename")
        direct = root / name
        out.append(str(direct) if direct.is_file() else (str(index[Path(name).name]) if Path(name).name in index else None))
    return out


def derived(table, where: str):
    """The table with `label`, `gender_presentation`, `age_group`, `skin_tone` and
    `skin_tone_group` made from FACET's raw vote columns where it has them (a column it already
    has is kept as it is), and without the votes."""
    table = table.copy()
    if "label" not in table and "class1" in table:
        table["label"] = table["class1"]
    for column, votes in ONE_HOT.items():
        if column not in table and _family(table, tuple(votes), where):
            table[column] = _one_hot(table, votes, where)
    if "skin_tone" not in table and _family(table, SKIN_TONE_COLUMNS, where):
        table["skin_tone"] = _majority_tone(table, where)
    if "skin_tone_group" not in table and "skin_tone" in table:
        table["skin_tone_group"] = [_tone_group(t) for t in table["skin_tone"].astype(str)]
    raw = [c for votes in ONE_HOT.values() for c in votes] + list(SKIN_TONE_COLUMNS)
    return table.drop(columns=[c for c in raw if c in table])  # the votes live on in what they made


def _family(table, columns: tuple, where: str) -> bool:
    """True when the table has this family of FACET columns; some but not all is an error."""
    have = [c for c in columns if c in table]
    if have and len(have) < len(columns):
        raise UserError(f"{where}: missing column(s) {', '.join(c for c in columns if c not in table)} "
                        f"(it has {', '.join(have)})")
    return bool(have)


def _counts(table, columns, where: str):
    """(n, k) int array of the columns; a value that is not a whole number >= 0: one line."""
    import numpy as np
    import pandas as pd

    out = np.zeros((len(table), len(columns)), dtype=np.int64)
    for j, c in enumerate(columns):
        num = pd.to_numeric(table[c].astype(str).str.strip(), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(num) | (num < 0) | (num != np.round(num))
        if bad.any():
            i = int(bad.argmax())
            from audit.data import _line
            raise UserError(f"{where}: {_line(where, i)}: {c} {table[c].iloc[i]!r} is not a count (0, 1, 2, ...)")
        out[:, j] = num.astype(np.int64)
    return out


def _one_hot(table, votes: dict, where: str) -> list:
    import numpy as np

    names = [v for v in votes.values() if v is not None]
    marks = _counts(table, [c for c, v in votes.items() if v is not None], where) > 0
    one = marks.sum(axis=1) == 1
    return [names[int(j)] if ok else UNKNOWN for j, ok in zip(np.argmax(marks, axis=1), one)]


def _majority_tone(table, where: str) -> list:
    """The tone most annotators chose; argmax takes the first maximum, so a tie goes to the
    lighter tone. No tone chosen: unknown."""
    import numpy as np

    counts = _counts(table, SKIN_TONES, where)
    _counts(table, ("skin_tone_na",), where)  # checked like the others, never a tone
    return [str(int(j) + 1) if total else UNKNOWN for j, total in zip(np.argmax(counts, axis=1), counts.sum(axis=1))]


def _tone_group(tone: str) -> str:
    return SKIN_TONE_GROUPS.get(int(tone), UNKNOWN) if tone.isdigit() else UNKNOWN
