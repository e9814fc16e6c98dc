"""Write FACET's release layout (annotations/annotations.csv + imgs_N/) for tests: real files in
the real format, never a download. A person is a dict of the CSV's columns; what is left out
gets a default (one masculine, middle-aged annotator vote, Monk tone 3)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

GENDER = ("masc", "fem", "non_binary", "na")
AGE = ("young", "middle", "older", "na")
COLUMNS = (["person_id", "filename", "class1", "class2"]
           + [f"gender_presentation_{g}" for g in GENDER] + [f"age_presentation_{a}" for a in AGE]
           + [f"skin_tone_{t}" for t in range(1, 11)] + ["skin_tone_na", "bounding_box"])


def person(pid, filename, class1, box, *, gender="masc", age="middle", tones=None, class2=""):
    """One CSV row: `gender`/`age` name the column set to 1 (None: all 0); `tones` {tone: votes}."""
    row = {"person_id": str(pid), "filename": filename, "class1": class1, "class2": class2,
           "bounding_box": json.dumps(dict(zip(("x", "y", "width", "height"), box)))}
    row.update({f"gender_presentation_{g}": int(g == gender) for g in GENDER})
    row.update({f"age_presentation_{a}": int(a == age) for a in AGE})
    tones = {3: 1} if tones is None else tones
    row.update({f"skin_tone_{t}": tones.get(t, 0) for t in range(1, 11)})
    row["skin_tone_na"] = tones.get("na", 0)
    return row


def write_facet(root: Path, people: list[dict], images: dict) -> Path:
    """`images`: {relative path under root (e.g. "imgs_1/a.jpg"): PIL image}."""
    root = Path(root)
    for rel, img in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    with open(root / "annotations" / "annotations.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[c for c in COLUMNS if any(c in p for p in people)])
        w.writeheader()
        w.writerows(people)
    return root
