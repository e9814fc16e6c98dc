"""Generate the bad-input corpus: images and tables a real audit meets, each with its expectation.

    python tests/bad_inputs/make_corpus.py OUT_DIR

writes the files under OUT_DIR and `OUT_DIR/cases.json`, one entry per case:
- image cases (`"layer": "image"`): a file under `images/`; `"expect": "skip"` with a
  `reason` substring (the documented skip), or `"decode"` with the `size` and a few `pixels`
  `[x, y, [r, g, b]]` the RGB image must show (within `tol`);
- table cases (`"layer": "table"`): a source folder under `tables/`; `"expect": "error"` with the
  substrings the one-line UserError must hold (file, line, problem), or `"load"` with column values
  that must come through intact.
Everything is generated (no binary blobs in git) and seeded, so the corpus is the same every time.
"""
import io
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

RACES = ["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic", "Southeast Asian"]
GENDERS = ["Male", "Female"]
AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions: the decompression-bomb guard must refuse it unread."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    """Stored 20x10 (left half red, right half blue) with Orientation=6: shown 10x20, red on top."""
    from PIL import Image

    img = Image.new("RGB", (20, 10), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return _save(img, "JPEG", quality=95, exif=exif.tobytes())


def image_cases() -> list[tuple[str, bytes, dict]]:
    from PIL import Image

    jpeg = _save(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG", quality=95)
    png = _save(Image.new("RGB", (16, 16), (10, 200, 30)), "PNG")
    gray16 = np.array([[0, 32896], [65535, 65535]], dtype=np.uint16)  # 32896/65535*255 = 128
    dark16 = np.full((4, 4), 200, dtype=np.uint16)                    # 200/65535: nearly black
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 128))                 # half-transparent red
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 40, 90, 160] + [0] * 762)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 1                                      # index 1 fully transparent
    la = Image.new("LA", (8, 8), (0, 0))                                # black, fully transparent
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))                  # pure cyan ink
    one_bit = Image.new("1", (8, 8), 1)
    return [
        ("zero_byte.jpg", b"", {"expect": "skip", "reason": "cannot identify image file"}),
        ("truncated.jpg", jpeg[: len(jpeg) // 2], {"expect": "skip", "reason": "truncated"}),
        ("truncated.png", png[: len(png) - 30], {"expect": "skip", "reason": ""}),
        ("html_named.jpg", b"<html><body>not a face</body></html>\n",
         {"expect": "skip", "reason": "cannot identify image file"}),
        ("random_bytes.png", np.random.default_rng(0).bytes(2048),
         {"expect": "skip", "reason": "cannot identify image file"}),
        ("svg_named.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>',
         {"expect": "skip", "reason": "cannot identify image file"}),
        ("bomb_400mpx.png", _png_header_only(20000, 20000), {"expect": "skip", "reason": "decompression bomb"}),
        ("bomb_72mpx.png", _png_header_only(9000, 8000), {"expect": "skip", "reason": "decompression bomb"}),
        ("png_named.jpg", png, {"expect": "decode", "size": [16, 16], "pixels": [[3, 3, [10, 200, 30]]], "tol": 0}),
        ("cmyk.jpg", _save(cmyk, "JPEG", quality=95),
         {"expect": "decode", "size": [16, 16], "pixels": [[8, 8, [0, 255, 255]]], "tol": 6}),
        ("gray16.png", _save(Image.fromarray(gray16), "PNG"),
         {"expect": "decode", "size": [2, 2], "pixels": [[0, 0, [0, 0, 0]], [1, 0, [128, 128, 128]],
                                                         [0, 1, [255, 255, 255]]], "tol": 1}),
        ("gray16_dark.png", _save(Image.fromarray(dark16), "PNG"),
         {"expect": "decode", "size": [4, 4], "pixels": [[1, 1, [1, 1, 1]]], "tol": 1}),
        ("rgb48.png", _rgb48_png(),
         {"expect": "decode", "size": [4, 4], "pixels": [[0, 0, [255, 128, 0]]], "tol": 1}),
        ("rgba.png", _save(rgba, "PNG"),
         {"expect": "decode", "size": [8, 8], "pixels": [[4, 4, [255, 127, 127]]], "tol": 1}),
        ("palette.png", _save(pal, "PNG"), {"expect": "decode", "size": [8, 8], "pixels": [[2, 2, [40, 90, 160]]], "tol": 0}),
        ("palette_transparent.png", _save(pal_t, "PNG", transparency=1),
         {"expect": "decode", "size": [8, 8], "pixels": [[2, 2, [255, 255, 255]]], "tol": 0}),
        ("gray_alpha.png", _save(la, "PNG"), {"expect": "decode", "size": [8, 8], "pixels": [[0, 0, [255, 255, 255]]], "tol": 0}),
        ("grayscale.jpg", _save(Image.new("L", (16, 16), 90), "JPEG", quality=95),
         {"expect": "decode", "size": [16, 16], "pixels": [[5, 5, [90, 90, 90]]], "tol": 2}),
        ("one_bit.png", _save(one_bit, "PNG"), {"expect": "decode", "size": [8, 8], "pixels": [[0, 0, [255, 255, 255]]], "tol": 0}),
        ("exif_rotated.jpg", _exif_rotated(),
         {"expect": "decode", "size": [10, 20], "pixels": [[5, 4, [255, 0, 0]], [5, 15, [0, 0, 255]]], "tol": 40}),
    ]


def _rgb48_png() -> bytes:
    """16 bits per channel RGB, written by hand (PIL cannot write it): (65535, 32896, 0)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\0" + struct.pack(">HHH", 65535, 32896, 0) * 4
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * 4)) \
        + chunk(b"IEND", b"")


# -- tables ---------------------------------------------------------------------------------
def _fairface_rows(n: int) -> list[dict]:
    return [{"file": f"val/{i}.png", "age": AGES[i % 9], "gender": GENDERS[i % 2], "race": RACES[i % 7],
             "service_test": "True"} for i in range(n)]


def _csv(rows: list[dict], *, sep: str = ",") -> str:
    cols = list(rows[0])
    return "\n".join([sep.join(cols)] + [sep.join(str(r[c]) for c in cols) for r in rows]) + "\n"


def _fairface_folder(root: Path, rows: list[dict], *, text: str | None = None) -> None:
    from PIL import Image

    (root / "val").mkdir(parents=True, exist_ok=True)
    for i in range(len(rows)):
        Image.new("RGB", (8, 8), (i * 20 % 256, 50, 90)).save(root / "val" / f"{i}.png")
    (root / "fairface_label_val.csv").write_text(text if text is not None else _csv(rows), encoding="utf-8")


def _with(rows, i, **kw):
    rows = [dict(r) for r in rows]
    rows[i].update(kw)
    return rows


def table_cases(root: Path) -> list[dict]:
    """Write each table case's folder under root; return its manifest entries."""
    base = _fairface_rows(6)
    ff = "fairface_label_val.csv"
    cases = [
        ("race_not_fairface", _with(base, 2, race="Martian"), ["line 4", "race", "'Martian'", "FairFace"]),
        ("gender_not_fairface", _with(base, 0, gender="M"), ["line 2", "gender", "'M'"]),
        ("age_not_fairface", _with(base, 5, age="25"), ["line 7", "age", "'25'"]),
        ("empty_race_value", _with(base, 3, race=""), ["line 5", "race", "empty"]),
        ("duplicate_image_path", _with(base, 4, file="val/1.png"), ["line 6", "val/1.png", "line 3"]),
        ("missing_race_column", [{k: v for k, v in r.items() if k != "race"} for r in base],
         ["missing column", "race"]),
    ]
    out = []
    for name, rows, needles in cases:
        _fairface_folder(root / name, rows)
        out.append({"name": name, "spec": f"tables/{name}", "kind": "fairface", "expect": "error",
                    "contains": [ff, *needles]})
    for name, sep, word in (("semicolon_delimited", ";", "';'"), ("tab_delimited", "\t", "tab")):
        _fairface_folder(root / name, base, text=_csv(base, sep=sep))
        out.append({"name": name, "spec": f"tables/{name}", "kind": "fairface", "expect": "error",
                    "contains": [ff, "delimit", word]})
    ragged = _csv(base).splitlines()
    ragged[3] += ",extra,fields"
    _fairface_folder(root / "ragged_row", base, text="\n".join(ragged) + "\n")
    out.append({"name": "ragged_row", "spec": "tables/ragged_row", "kind": "fairface", "expect": "error",
                "contains": [ff, "line 4"]})
    _fairface_folder(root / "header_only", base, text="file,age,gender,race,service_test\n")
    out.append({"name": "header_only", "spec": "tables/header_only", "kind": "fairface", "expect": "error",
                "contains": [ff, "no rows"]})
    _fairface_folder(root / "zero_byte_csv", base, text="")
    out.append({"name": "zero_byte_csv", "spec": "tables/zero_byte_csv", "kind": "fairface", "expect": "error",
                "contains": [ff, "cannot parse"]})
    latin = root / "latin1_csv"
    _fairface_folder(latin, base)
    (latin / ff).write_bytes(_csv(_with(base, 1, race="Caf\u00e9")).encode("latin-1"))
    out.append({"name": "latin1_csv", "spec": "tables/latin1_csv", "kind": "fairface", "expect": "error",
                "contains": [ff, "UTF-8"]})
    out += _free_form_tables(root)
    out += _facet_tables(root)
    return out


FACET_HEADER = ("person_id,filename,class1,gender_presentation_masc,gender_presentation_fem,"
                "gender_presentation_non_binary,gender_presentation_na,age_presentation_young,"
                "age_presentation_middle,age_presentation_older,age_presentation_na,"
                + ",".join(f"skin_tone_{t}" for t in range(1, 11)) + ",skin_tone_na,bounding_box")


def _facet_folder(root: Path, boxes: list[str], *, votes: str = "1,0,0,0,0,1,0,0" + ",0,0,1" + ",0" * 8) -> None:
    """FACET's layout: annotations/annotations.csv, one person per box, all in imgs_1/a.png (16x16)."""
    from PIL import Image

    (root / "imgs_1").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (0, 90, 0)).save(root / "imgs_1" / "a.png")
    (root / "annotations").mkdir(exist_ok=True)
    lines = [FACET_HEADER] + [f'{i},a.png,nurse,{votes},"{box}"' for i, box in enumerate(boxes)]
    (root / "annotations" / "annotations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _facet_tables(root: Path) -> list[dict]:
    """FACET's release layout (kind persons): boxes that are not JSON, that lie off the image,
    a vote that is not a count; and a good file whose people come through as crops."""
    ok = '{""x"": 1, ""y"": 2, ""width"": 5, ""height"": 6}'
    cases = [("facet_box_not_json", [ok, "x=1 y=2"], ["line 3", "bounding_box", "not a JSON object"]),
             ("facet_box_off_image", [ok, ok, '{""x"": 40, ""y"": 2, ""width"": 5, ""height"": 6}'],
              ["line 4", "lies outside the image a.png (16x16)"]),
             ("facet_box_no_width", ['{""x"": 1, ""y"": 2, ""width"": 0, ""height"": 6}'],
              ["line 2", "width and height above 0"])]
    out = []
    for name, boxes, needles in cases:
        _facet_folder(root / name, boxes)
        out.append({"name": name, "spec": f"tables/{name}", "kind": "persons", "expect": "error",
                    "contains": ["annotations.csv", *needles]})
    _facet_folder(root / "facet_vote_not_a_count", [ok], votes="1,0,0,0,0,1,0,0,0,0,two" + ",0" * 8)
    out.append({"name": "facet_vote_not_a_count", "spec": "tables/facet_vote_not_a_count", "kind": "persons",
                "expect": "error", "contains": ["annotations.csv", "line 2", "skin_tone_3", "'two'"]})
    _facet_folder(root / "facet_two_people", [ok, ok.replace("1,", "9,")])
    out.append({"name": "facet_two_people", "spec": "tables/facet_two_people", "kind": "persons",
                "expect": "load", "column": "skin_tone_group", "values": ["1-3", "1-3"]})
    return out


def _free_form_tables(root: Path) -> list[dict]:
    """Image folders with metadata.csv: names that must pass through intact, a missing image."""
    from PIL import Image

    names = ["Zo\u00eb Sald\u00e3\u00f1a", "<script>alert('x')</script>", "\u674e\u5c0f\u9f99",
             "O'Brien & \"Sons\"", "\u0645\u062d\u0645\u062f", "Bj\u00f6rk \U0001F3A4"]
    celeb = root / "unicode_html_names"
    (celeb / "images").mkdir(parents=True, exist_ok=True)
    for i in range(len(names)):
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(celeb / "images" / f"{i}.png")
    import csv

    with open(celeb / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "name"])
        w.writerows([[f"images/{i}.png", n] for i, n in enumerate(names)])
    missing = root / "missing_image_file"
    (missing / "images").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (0, i * 50, 0)).save(missing / "images" / f"{i}.png")
    (missing / "metadata.csv").write_text("file_name,label\n" + "".join(
        f"images/{i}.png,cat\n" for i in range(4)), encoding="utf-8")
    odd = root / "not_regular_files"  # a FIFO would block a naive read forever; a folder is no image
    (odd / "images" / "folder.jpg").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(odd / "images" / "ok.png")
    odd_rows = ["images/ok.png", "images/folder.jpg"]
    if hasattr(os, "mkfifo"):
        os.mkfifo(odd / "images" / "pipe.jpg")
        odd_rows.append("images/pipe.jpg")
    (odd / "metadata.csv").write_text("file_name,label\n" + "".join(f"{r},cat\n" for r in odd_rows))
    nolabel = root / "classify_without_label"
    (nolabel / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(nolabel / "images" / "0.png")
    (nolabel / "metadata.csv").write_text("file_name,class\nimages/0.png,cat\n", encoding="utf-8")
    return [
        {"name": "unicode_html_names", "spec": "tables/unicode_html_names", "kind": "celebrity",
         "expect": "load", "column": "name", "values": names},
        {"name": "missing_image_file", "spec": "tables/missing_image_file", "kind": "classify",
         "expect": "load", "column": "label", "values": ["cat"] * 3,
         "skipped": [{"path": "images/3.png", "reason": "No such file"}]},
        {"name": "not_regular_files", "spec": "tables/not_regular_files", "kind": "classify",
         "expect": "load", "column": "label", "values": ["cat"],
         "skipped": [{"path": r, "reason": "not a regular file"} for r in odd_rows[1:]]},
        {"name": "classify_without_label", "spec": "tables/classify_without_label", "kind": "classify",
         "expect": "error", "contains": ["metadata.csv", "missing column", "label"]},
    ]


def make_fairface_source(root: Path, n: int, *, size: int = 16, seed: int = 0) -> Path:
    """A FairFace release layout with n distinct tiny noise images: load for the heavy tests."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "val").mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    lines = ["file,age,gender,race,service_test"]
    for i in range(n):
        Image.fromarray(pixels[i]).save(root / "val" / f"{i}.png", compress_level=1)
        lines.append(f"val/{i}.png,{AGES[rng.integers(9)]},{GENDERS[rng.integers(2)]},"
                     f"{RACES[rng.integers(7)]},True")
    (root / "fairface_label_val.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def make_corpus(out: Path) -> list[dict]:
    """Write every case under out and out/cases.json; return the manifest."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cases = []
    for name, data, expect in image_cases():
        (out / "images" / name).write_bytes(data)
        cases.append({"name": name, "layer": "image", "file": f"images/{name}", **expect})
    cases += [{"layer": "table", **c} for c in table_cases(out / "tables")]
    (out / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False), encoding="utf-8")
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUT_DIR")
    print(f"{len(make_corpus(Path(sys.argv[1])))} cases in {sys.argv[1]}")
