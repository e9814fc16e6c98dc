"""Dataset sources: every SRC form read into one shape, a table of string attributes plus images.

SRC forms (DESIGN.md): a Hugging Face id `org/name[:config][@split]`; a `save_to_disk` folder;
a parquet file or folder; FairFace's release layout (`fairface_label_val.csv` + `val/`); an image
folder with `metadata.csv` (`file_name` column, the HF imagefolder convention) or `labels.csv`;
a CSV file of image paths; a synthetic world folder (`audit world`), read by role; FACET's release
layout (`annotations/annotations.csv` + `imgs_*/`: one row per annotated person, its image the crop
of the person's box; audit/persons.py).
"""
import dataclasses
import hashlib
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from audit import persons
from audit.errors import UserError
from audit.world import layout

log = logging.getLogger(__name__)

REQUIRED = {"fairface": ("race", "gender", "age"), "celebrity": ("name",),
            "classify": ("label",), "pairs": ("caption",), "persons": ("label",), "any": ()}
FILE_COLUMNS = ("file_name", "file", "filepath", "path", "image_path", "image",
                "file_path", "imageRelPath")  # the last two: GeoDE's index.csv, Dollar Street's
# GeoDE's release (index.csv) and Dollar Street's (MLCommons dataset_dollarstreet: the ImageNet
# test split's table first, then all images; the Hugging Face copy nlphuji/dollar_street_test)
GEODE_TABLES = ("index.csv",)
DOLLAR_STREET_TABLES = ("images_v2_imagenet_test.csv", "images_v2.csv", "dollar_street_test.csv")
FOLDER_TABLES = ("metadata.csv", "labels.csv", "captions.csv", *GEODE_TABLES, *DOLLAR_STREET_TABLES)
HF_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.\[\]:%+-]+)?$")
FAIRFACE_VALUES = {  # FairFace's own strings (its release CSV and the Hub's ClassLabel names)
    "race": ("East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic", "Southeast Asian"),
    "gender": ("Male", "Female"),
    "age": ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")}
MAX_IMAGE_BYTES = 256 * 2**20  # bigger "images" are mistakes or attacks: skipped, never read
MAX_IMAGE_PIXELS = 64_000_000  # decompression-bomb guard (_check_pixels), a little tighter than PIL's
CHECK_THREADS = 2              # threads of the check pass (read, hash, decode every image once)


@dataclass
class Source:
    name: str
    spec: str
    kind: str
    table: "object"                 # pandas.DataFrame, attribute columns as str, RangeIndex
    fingerprint: str
    skipped: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    _reader: Callable = None        # raw index -> bytes
    _raw: list = None               # row -> raw index
    _hashes: list = None            # row -> sha256 of the image bytes
    _decoded: dict = None           # row -> decoded image, when kept (`keep_decoded`)
    _boxes: list = None             # row -> (left, top, right, bottom) crop of a person, or None

    def __len__(self) -> int:
        return len(self.table)

    def image_bytes(self, i: int) -> bytes:
        return self._reader(self._raw[i])

    def image(self, i: int):
        if self._decoded is None:
            return self._load(i)
        if i not in self._decoded:
            self._decoded[i] = self._load(i)
        return self._decoded[i].copy()  # a transform may draw on its input

    def _load(self, i: int):
        img = decode_image(self.image_bytes(i))
        return img.crop(self._boxes[i]) if self._boxes else img

    def keep_decoded(self) -> "Source":
        """This source, keeping each image once decoded: for a small subset that is read many
        times over (distribution_shift encodes 50 corrupted copies of each image), where reading
        and decoding the file again each time is a tenth of the demo's run time."""
        return dataclasses.replace(self, _decoded={})

    def content_hash(self, i: int) -> str:
        return self._hashes[i]

    def subset(self, indices) -> "Source":
        idx = [int(i) for i in indices]
        return Source(name=self.name, spec=self.spec, kind=self.kind,
                      table=self.table.iloc[idx].reset_index(drop=True),
                      fingerprint=hash_strings([self.fingerprint, *map(str, idx)]),
                      skipped=self.skipped, attrs=self.attrs, _reader=self._reader,
                      _raw=[self._raw[i] for i in idx], _hashes=[self._hashes[i] for i in idx],
                      _boxes=[self._boxes[i] for i in idx] if self._boxes else None)

    def describe(self) -> dict:
        """The entry for results.json's `data` section."""
        return {"spec": self.spec, "kind": self.kind, "fingerprint": self.fingerprint,
                "n": len(self), "skipped": len(self.skipped), "skipped_files": self.skipped[:1000]}


def decode_image(data: bytes):
    """Bytes -> RGB PIL image, upright per EXIF; any decode failure raises ValueError. An image
    of more than MAX_IMAGE_PIXELS is refused from its header, before its pixels are decoded."""
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        _check_pixels(img.size)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", text)) from None


def _check_pixels(size) -> None:
    """Our own decompression-bomb guard, a plain comparison. PIL's only warns below twice its
    limit, and making that warning an error takes warnings filters: process-wide state that
    another thread (the check pass's second thread, a model loader's held_warnings) may swap
    at the same moment, dropping the guard."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{width} by {height} = {width * height:,} pixels, over the {MAX_IMAGE_PIXELS:,}-pixel "
                         "limit: refused unread as a possible decompression bomb")


def read_image_file(path: str) -> bytes:
    """A table may name any path: only a regular file of sane size is read (a FIFO or a device
    would block or never end). Any refusal is an OSError, so the image is skipped and listed."""
    import stat

    st = Path(path).stat()
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"not a regular file: {path}")
    if st.st_size > MAX_IMAGE_BYTES:
        raise OSError(f"file too large for an image ({st.st_size} bytes > {MAX_IMAGE_BYTES})")
    return Path(path).read_bytes()


def _to_rgb(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        # 16-bit modes always span 0..65535 (a dark 16-bit image must stay dark); only 32-bit
        # "I" has no fixed range, so it is read as 8-bit unless its values say otherwise.
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        from PIL import Image

        img = Image.fromarray((arr / top * 255).clip(0, 255).astype("uint8"), mode="L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        from PIL import Image

        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def load_source(spec: str, kind: str = "any", *, name: str | None = None, progress: bool = False) -> Source:
    if kind not in REQUIRED:
        raise ValueError(f"unknown source kind {kind!r}")
    table, reader, paths, resolved = _read_any(spec, kind)
    attrs = {}
    if kind == "persons":  # FACET's raw vote columns -> gender_presentation, age_group, skin_tone
        table = persons.derived(table, resolved)
    if kind == "classify":  # GeoDE's and Dollar Street's own columns, read as-is
        table, attrs = known_layout(table, resolved)
    _check_columns(table, kind, resolved)
    _check_values(table, kind, resolved)
    _check_duplicates(paths, kind, resolved)
    source = _finalize(name or kind, spec, kind, table, reader, paths, progress=progress)
    source.attrs.update(attrs)
    return source


def _read_any(spec: str, kind: str):
    path = Path(spec)
    if layout.is_world(path) and layout.kind_path(path, kind):  # a world folder, read by role
        return _read_any(str(layout.kind_path(path, kind)), kind)
    if path.is_dir():
        return _read_dir(path, spec)
    if path.is_file():
        if path.suffix == ".csv":
            return _read_csv_table(path)
        if path.suffix == ".parquet":
            return _read_hf(_parquet_dataset([path]), str(path))
        raise UserError(f"{spec}: unsupported file type (expected .csv or .parquet)")
    if "@" in spec and Path(spec.split("@")[0]).is_dir():
        return _read_split_spec(spec)
    if HF_ID.match(spec):
        return _read_hf(_hub_dataset(spec, kind), spec)
    raise UserError(f"{spec}: no such file or directory, and not a Hugging Face dataset id")


def _read_split_spec(spec: str):
    base, _, split = spec.rpartition("@")
    path = Path(base)
    if (path / f"fairface_label_{split[:3]}.csv").is_file():
        return _read_fairface(path, split)
    return _read_hf(_disk_dataset(path, split), spec)


def _read_dir(path: Path, spec: str):
    if (path / "fairface_label_val.csv").is_file():
        return _read_fairface(path, "val")
    if persons.is_facet(path):
        return persons.read_facet(path, _parse_csv)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return _read_hf(_disk_dataset(path, None), spec)
    for table in FOLDER_TABLES:
        if (path / table).is_file():
            return _read_csv_table(path / table)
    parquets = sorted(path.rglob("*.parquet"))
    if parquets:
        return _read_hf(_parquet_dataset(parquets), spec)
    raise UserError(f"{spec}: folder has none of fairface_label_val.csv, {persons.ANNOTATIONS}, a datasets save_to_disk, "
                    f"{', '.join(FOLDER_TABLES)} or parquet files")


def _read_fairface(path: Path, split: str):
    split = "val" if split.startswith("val") else split
    csv = path / f"fairface_label_{split}.csv"
    if not csv.is_file():
        raise UserError(f"{csv}: FairFace label file not found")
    return _read_csv_table(csv, file_column="file")


def _read_csv_table(csv: Path, *, file_column: str | None = None):
    df = _parse_csv(csv)
    col = file_column or next((c for c in FILE_COLUMNS if c in df.columns), None)
    if col is None or col not in df.columns:
        raise UserError(f"{csv}: no image path column (expected one of {', '.join(FILE_COLUMNS)}); "
                        f"found columns: {_names(df.columns)}")
    _check_paths(df[col].tolist(), csv)
    paths = [str(csv.parent / p) for p in df[col]]
    table = df.drop(columns=[col]).reset_index(drop=True)
    return table, lambda i: read_image_file(paths[i]), paths, str(csv)


def _parse_csv(csv: Path):
    """A CSV of strings (nothing read as NaN); any problem reading it is one UserError line."""
    import pandas as pd

    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except UnicodeDecodeError as e:
        raise UserError(f"{csv}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{csv}: cannot parse as CSV ({str(e).splitlines()[0]})") from None
    _check_delimiter(df, csv)
    return df


def _check_delimiter(df, csv: Path) -> None:
    """A ;- or tab-separated file parses as one wide column: say so instead of 'no column'."""
    if len(df.columns) != 1:
        return
    header = str(df.columns[0])
    for sep, label in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if sep in header:
            raise UserError(f"{csv}: looks {label}-delimited (header {header[:60]!r}); "
                            "clip-audit reads comma-delimited CSV")


def _check_paths(paths: list[str], csv: Path) -> None:
    """Lines count like an editor's: the header is line 1, the first image line 2."""
    for i, p in enumerate(paths):
        if not p.strip():
            raise UserError(f"{csv}: line {i + 2}: empty image path")


def _check_duplicates(paths: list[str], kind: str, where: str) -> None:
    """One row per image, except image-text pairs (several captions per image are normal)."""
    if kind == "pairs":
        return
    row = (lambda i: f"line {i + 2}") if where.endswith(".csv") else (lambda i: f"row {i}")
    first = {}
    for i, p in enumerate(paths):
        if p in first:
            raise UserError(f"{where}: {row(i)}: image path {p!r} repeats {row(first[p])}")
        first[p] = i


def _hub_dataset(spec: str, kind: str):
    import datasets

    from audit import hub

    online = hub.prepare()
    repo, config, split = _parse_hf_id(spec)
    try:
        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # hub/network/cache errors come in many types
        why = "the Hub is unreachable and the dataset is not in the local cache" if not online \
            else str(e).splitlines()[0][:200]
        raise UserError(f"{spec}: could not load the dataset from the Hugging Face Hub ({why}). "
                        "Pass a local copy instead: a save_to_disk folder, parquet files, or "
                        "FairFace's release layout (fairface_label_val.csv + val/)") from None
    return _pick_split(ds, split, spec)


def _parse_hf_id(spec: str):
    rest, _, split = spec.partition("@")
    repo, _, config = rest.partition(":")
    return repo, (config or None), (split or None)


def _disk_dataset(path: Path, split: str | None):
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # a garbled state.json or dataset_info.json fails in many types
        why = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"{path}: not a readable datasets save_to_disk folder "
                        f"({type(e).__name__}: {why})") from None
    if split and isinstance(ds, datasets.Dataset) and split != str(ds.split or ""):
        # one split saved alone: an @split must name it, or a typo would audit other data silently
        have = f"its split is {str(ds.split)!r}" if ds.split else "it records no split name"
        raise UserError(f"{path}@{split}: no split {split!r}: the folder holds a single dataset "
                        f"({have}); drop the @{split}")
    return _pick_split(ds, split, str(path))


def _parquet_dataset(files):
    import datasets

    try:
        return datasets.Dataset.from_parquet([str(f) for f in files])
    except Exception as e:  # pyarrow raises its own zoo
        raise UserError(f"{files[0]}: cannot read parquet ({str(e).splitlines()[0]})") from None


def _pick_split(ds, split: str | None, spec: str):
    import datasets

    if not isinstance(ds, datasets.DatasetDict):
        return ds
    if split:
        if split not in ds:
            raise UserError(f"{spec}: no split {split!r}; available: {', '.join(ds)}")
        return ds[split]
    for name in ("validation", "val", "test", "train"):
        if name in ds:
            return ds[name]
    return ds[next(iter(ds))]


def _read_hf(ds, spec: str):
    """A datasets.Dataset -> table of strings (ClassLabel ints become their names) + bytes reader."""
    import datasets

    img_col = _image_column(ds.features)
    if img_col is None:
        raise UserError(f"{spec}: no image column (a datasets.Image feature, or an 'image' column of "
                        f"bytes or {{bytes, path}}) in columns {list(ds.features)}")
    try:
        ds = ds.cast_column(img_col, datasets.Image(decode=False))
    except (TypeError, ValueError) as e:  # e.g. {bytes, path} with a path that is not text
        raise UserError(f"{spec}: column {img_col!r} cannot be read as images ({str(e).splitlines()[0][:200]})") from None
    table = ds.remove_columns([img_col]).to_pandas()
    for col, feat in ds.features.items():
        if isinstance(feat, datasets.ClassLabel):
            table[col] = [feat.int2str(int(v)) for v in table[col]]
    table = table.astype(str).reset_index(drop=True)
    images = ds.select_columns([img_col])

    def reader(i: int) -> bytes:
        item = images[i][img_col]
        if item and item.get("bytes"):
            return item["bytes"]
        if item and item.get("path"):
            return read_image_file(item["path"])
        raise OSError("empty image cell (no bytes and no path)")  # skipped and listed like a bad file

    paths = [f"{spec}[{i}]" for i in range(len(ds))]
    return table, reader, paths, spec


def _image_column(features) -> str | None:
    """The datasets.Image column; else (pandas or pyarrow wrote the parquet, the common layout)
    an `image`-named column of raw bytes or of {bytes, path} structs, which datasets casts."""
    import datasets

    found = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if found:
        return found

    def image_like(f) -> bool:
        if isinstance(f, datasets.Value):
            return f.dtype in ("binary", "large_binary")
        return isinstance(f, dict) and "bytes" in f and set(f) <= {"bytes", "path"}
    named = [c for c in features if c.lower() in ("image", "img", "picture")]
    return next((c for c in named if image_like(features[c])), None)


# -- GeoDE and Dollar Street, read as they are released ----------------------------------------
# GeoDE (Ramaswamy et al., NeurIPS 2023): index.csv with file_path, object, region, ip_country;
# its Hugging Face copy (MLap/GeoDE) has image, object, region, ip_country.
# Dollar Street (Gaviria Rojas et al., NeurIPS 2022; MLCommons dataset_dollarstreet):
# images_v2*.csv with id, country.id, country.name, region.id, type, imageRelPath, topics
# (a list, e.g. "['toothbrush']"), place, income, imagenet_synonyms, imagenet_sysnet_id.
GEODE_COLUMNS = ("object", "region")
DOLLAR_STREET_COLUMNS = ("topics", "income", "region.id")


def known_layout(table, where: str):
    """(table, attrs): a GeoDE or Dollar Street table (by its file name, or by its columns when
    it has no `label`) as a classify source: `label` from its object / first topic, `region`,
    `country`, and for Dollar Street `income_group` (audit.groups.bin_numeric; the bins go to
    attrs["group_bins"]). Any other table comes back as it is."""
    name = Path(str(where)).name
    by_name = "geode" if name in GEODE_TABLES else "dollar street" if name in DOLLAR_STREET_TABLES else None
    has = set(table.columns)
    by_columns = None if "label" in has else \
        "dollar street" if {"topics", "income"} <= has else "geode" if set(GEODE_COLUMNS) <= has else None
    layout_ = by_name or by_columns
    if layout_ is None:
        return table, {}
    need = DOLLAR_STREET_COLUMNS if layout_ == "dollar street" else GEODE_COLUMNS
    missing = [c for c in need if c not in has]
    if missing:
        raise UserError(f"{where}: a {'Dollar Street' if layout_ == 'dollar street' else 'GeoDE'} table needs "
                        f"column(s) {', '.join(need)}; missing {', '.join(missing)}; found: {_names(table.columns)}")
    table = table.copy()
    if layout_ == "geode":
        table["label"] = table["object"].astype(str)
        if "ip_country" in has and "country" not in has:
            table["country"] = table["ip_country"].astype(str)
        return table, {}
    return _dollar_street(table, where)


def _dollar_street(table, where: str):
    from audit import groups

    table["label"] = [_first_topic(v, where, i) for i, v in enumerate(table["topics"])]
    table["region"] = table["region.id"].astype(str)
    if "country.name" in table.columns and "country" not in table.columns:
        table["country"] = table["country.name"].astype(str)
    income = _numbers(table["income"], where, "income")
    rule = groups.load_bins()
    table["income_group"], edges = groups.bin_numeric(income, rule)
    bins = {"income_group": {"from": "income", "rule": rule["name"], "edges": edges,
                             "labels": list(rule["labels"]), "file": rule["path"]}}
    return table, {"group_bins": bins}


def _first_topic(value, where: str, i: int) -> str:
    """A topics cell is a list written as text ("['toothbrush', 'tooth paste']", JSON, or a
    numpy repr); the image's class is its first topic."""
    text = str(value).strip()
    quoted = re.findall(r"'([^']*)'|\"([^\"]*)\"", text)
    topics = [a or b for a, b in quoted] if quoted else [t.strip() for t in text.strip("[]").split(",")]
    topics = [t.strip() for t in topics if t.strip()]
    if not topics:
        raise UserError(f"{where}: {_line(where, i)}: topics {text!r} names no topic")
    return topics[0]


def _numbers(column, where: str, name: str):
    import pandas as pd

    x = pd.to_numeric(column, errors="coerce")
    if x.isna().any():
        i = int(x.isna().to_numpy().argmax())
        raise UserError(f"{where}: {_line(where, i)}: {name} {column.iloc[i]!r} is not a number")
    return x.to_numpy(dtype=float)


def _line(where: str, i: int) -> str:
    return f"line {i + 2}" if str(where).endswith(".csv") else f"row {i}"


def _check_columns(table, kind: str, where: str) -> None:
    missing = [c for c in REQUIRED[kind] if c not in table.columns]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(missing)} needed for a {kind} source; "
                        f"found: {_names(table.columns)}")


def _check_values(table, kind: str, where: str) -> None:
    """No rows, or (fairface) an attribute value outside FairFace's own strings: one clear line."""
    if len(table) == 0:
        raise UserError(f"{where}: no rows (a header and no images)")
    if kind != "fairface":
        return
    for col, allowed in FAIRFACE_VALUES.items():
        bad = ~table[col].isin(allowed)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            value = table[col].iloc[i]
            row = f"line {i + 2}" if where.endswith(".csv") else f"row {i}"
            what = "empty" if not value.strip() else f"{value!r} is not a FairFace value"
            raise UserError(f"{where}: {row}: {col} {what} (expected one of {', '.join(allowed)}; "
                            f"{int(bad.sum())} such row(s))")


def _finalize(name, spec, kind, table, reader, paths, *, progress: bool) -> Source:
    """Read every image once: hash it (cache key, fingerprint) and check that it decodes. A
    person's crop (persons.CropReader) is hashed as its file's bytes plus the box, so the cache
    tells two people of one photo apart."""
    crops = isinstance(reader, persons.CropReader)
    kept, hashes, skipped, boxes = [], [], [], []
    for i, (digest, box, why) in enumerate(_check_all(reader, len(table), crops=crops, name=name,
                                                      progress=progress)):
        if why is not None:
            skipped.append({"path": paths[i], "reason": why})
            continue
        kept.append(i)
        boxes.append(box)
        hashes.append(digest)
    table = table.iloc[kept].reset_index(drop=True)
    fingerprint = hash_strings([*hashes, table.to_csv(index=False)])
    if skipped:
        log.warning("%s: skipped %d undecodable image(s) of %d", spec, len(skipped), len(paths))
    return Source(name=name, spec=spec, kind=kind, table=table, fingerprint=fingerprint,
                  skipped=skipped, _reader=reader, _raw=kept, _hashes=hashes,
                  _boxes=boxes if crops else None)


def _check_all(reader, n: int, *, crops: bool, name: str, progress: bool):
    """(sha256, crop box, None) per image in row order, or (None, None, why it cannot be used).
    Two threads: PIL decodes and sha256 hashes with the GIL released, so the check pass of a
    large source takes half the time on 2 cores."""
    from concurrent.futures import ThreadPoolExecutor

    from audit.progress import track

    def check(i: int) -> tuple:
        try:
            data = reader(i)
            box = reader.box(i, data) if crops else None
            if not crops:
                decode_image(data)
        except (OSError, ValueError) as e:
            return None, None, str(e) or type(e).__name__
        h = hashlib.sha256(data)
        if crops:
            h.update(("\0crop:%d,%d,%d,%d" % box).encode())
        return h.hexdigest(), box, None

    pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="clip-audit-check")
    try:
        yield from track(pool.map(check, range(n)), description=f"checking {name} images",
                         enabled=progress, total=n)
    finally:  # Ctrl-C: drop the images not started rather than check them all first
        pool.shutdown(wait=True, cancel_futures=True)


def _names(columns) -> str:
    """Column names for a one-line message: a name with a newline or control character is quoted."""
    return ", ".join(str(c) if str(c).isprintable() else repr(str(c)) for c in columns)


def hash_strings(items) -> str:
    """sha256 of strings joined by NUL: fingerprints here, cache keys in audit.embed."""
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()
