"""Atomic file writes: a kill -9 at any moment leaves the old file or the new one, never half."""
import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise whoever shares the report
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_dir(out: Path) -> Path:
    """`--out` must be a folder we can write, checked before anything loads: finding out after
    every probe ran would throw the whole run away. A folder not yet there is not made here
    (an interrupted run leaves nothing behind); its nearest existing parent is tried instead."""
    from audit.errors import UserError

    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            what = "is a file" if p == out else f"is below the file {p}"
            raise UserError(f"{out}: {what}; --out needs a folder")
    here = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    try:
        fd, probe = tempfile.mkstemp(dir=here, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:  # read-only mount, no permission, disk full: one line, before any work
        raise UserError(f"{out}: cannot write to this folder ({e.strerror or e})") from None
    return out


def write_together(out: Path, writers: dict) -> list[Path]:
    """Write several files of one run into `out` so that a failure leaves all the old ones or
    all the new ones, never a mix (a stale report beside new results could be mailed as current).

    `writers` maps a file name to a function that writes that file's content to the path it is
    given. Every file goes to a temp name first; only when all are complete are they renamed.
    A failure removes what was new; a disk error (full, read-only) becomes one UserError line."""
    from audit.errors import UserError

    out = Path(out)
    temps = {name: out / f".{name}.{os.getpid()}.new" for name in writers}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the folder ({e.strerror or e})") from None
    done: list[Path] = []
    try:
        for name, write in writers.items():
            write(temps[name])
        for name, tmp in temps.items():
            os.replace(tmp, out / name)
            done.append(out / name)
    except BaseException as e:
        for p in [*temps.values(), *done]:
            p.unlink(missing_ok=True)
        if done:  # some old files were already replaced: drop their old partners too
            for name in writers:
                (out / name).unlink(missing_ok=True)
        names = _listing(list(writers))
        state = f"removed {names}" if done else f"{names} left as they were"
        if isinstance(e, OSError):
            raise UserError(f"{out}: could not write {names} ({e.strerror or e}); {state}") from None
        raise
    return done


def _listing(names: list[str]) -> str:
    """"a", "a and b", "a, b and c": the files a message names."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
