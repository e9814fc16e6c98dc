"""The paired comparison of two runs on the same images (compare.json's `paired` section).

Both runs saw the same faces, so a change in a rate is best judged image by image: only the
images that moved (into what the metric counts, or out of it) carry information about the
change, and two independent CIs, each as wide as the whole sample's noise, miss moves that
McNemar's test on the movers finds at once (40 in vs 10 out of 2,000: CIs overlap, p ~ 2e-5).

A row is tested here when both runs recorded per-image outcomes (audit.outcomes) for its probe,
over the same images (the source's data fingerprint and the files' image hashes agree), a
column of each run names the row's identity, the row's group is labelled per image, the row
has a declared direction and a CI in both runs (a group too small for a CI is too small to
test) and the column's mean reproduces the row's value in both runs. Otherwise the row keeps
the unpaired CI-overlap test, and the section says why.

Per row: McNemar's exact test (two-sided binomial test of moved-in vs moved-out, p = 1/2), a
paired bootstrap CI of the change (images resampled), and the counts that moved in and out.
Holm's correction over every row tested in the comparison (its groups x rates x label sets):
the family-wise error rate of the paired verdicts stays at ALPHA. A row is a significant
regression when its Holm-adjusted p is under ALPHA and it moved its worse way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from audit.stats import holm, mcnemar_exact

log = logging.getLogger(__name__)

ALPHA = 0.05
N_BOOT = 2000
SEED = 0
TOLERANCE = 1e-9  # a column's mean vs its row's value: the same sum over the same images


def method(family: int) -> dict:
    return {"test": "McNemar exact: two-sided binomial test of the images that moved in vs out "
                    "(p = 1/2)",
            "ci": f"paired bootstrap, images resampled with replacement ({N_BOOT} resamples, "
                  f"seed {SEED}), {1 - ALPHA:.0%} percentile interval of the change",
            "correction": "holm", "family": family, "alpha": ALPHA, "n_boot": N_BOOT,
            "seed": SEED}


@dataclass
class _Pairing:
    source: str
    base: "object"   # pandas.DataFrame: the base run's rows of this source
    cand: "object"   # the candidate's, reordered to the base's images
    bspec: dict
    cspec: dict
    labels: dict = field(default_factory=dict)  # group_by -> labels per image (None: unusable)


def apply(rows: list, base: dict, cand: dict, base_out, cand_out, probes: list) -> dict:
    """Decide each pairable compare row by the paired test, in place; returns compare.json's
    `paired` section. `base_out`/`cand_out`: audit.outcomes.Loaded or None."""
    section = {"used": False, "note": None, "probes": {}, "moved": [], "images": {}}
    tests, pairings = [], {}
    for probe in probes:
        pairing, note = _align(probe, base, cand, base_out, cand_out)
        section["probes"][probe] = {"paired": pairing is not None, "note": note, "rows": 0,
                                    "source": pairing and pairing.source,
                                    "images": None if pairing is None else len(pairing.base)}
        if pairing:
            pairings[probe] = pairing
    for row in rows:
        pairing = pairings.get(row["probe"])
        found = pairing and _test(row, pairing)
        if found:
            tests.append((row, found))
            section["probes"][row["probe"]]["rows"] += 1
    for (row, found), q in zip(tests, holm([t["p_value"] for _, t in tests])):
        _decide(row, {**found, "p_adjusted": q})
    section.update(used=bool(tests), note=_note(section),
                   method=method(len(tests)))
    section["moved"], section["images"] = _moved(tests, pairings)
    return section


def _decide(row: dict, found: dict) -> None:
    columns = found.pop("columns")
    row["paired"] = {**found, "column": columns[0]}  # the base's name, as in `moved`
    row["test"] = "mcnemar_exact"
    row["significant"] = found["p_adjusted"] < ALPHA and row["direction"] in ("worse", "better")


def _note(section: dict) -> str | None:
    unpaired = {p: s["note"] for p, s in section["probes"].items() if not s["paired"]}
    if not unpaired:
        return None
    why = "; ".join(f"{p}: {n}" for p, n in unpaired.items())
    lead = ("no probe could" if len(unpaired) == len(section["probes"]) else
            f"{len(unpaired)} of {len(section['probes'])} probes could not")
    return f"{lead} be paired image by image ({why}): their rows are compared by CI overlap, " \
           "as two independent samples"


def _align(probe: str, base: dict, cand: dict, base_out, cand_out):
    """The two runs' outcomes of `probe` on the same images, or (None, why not)."""
    missing = [f"the {who} {_why_none(o)}" for who, o in (("baseline", base_out), ("candidate", cand_out))
               if o is None or o.frame is None or probe not in (o.record or {}).get("probes", {})]
    if missing:
        return None, "; ".join(missing)
    bspec, cspec = base_out.record["probes"][probe], cand_out.record["probes"][probe]
    source = bspec["source"]
    if cspec["source"] != source:
        return None, f"the runs report it on different sources ({source}, {cspec['source']})"
    prints = [((r.get("data") or {}).get(source) or {}).get("fingerprint") for r in (base, cand)]
    if None in prints or prints[0] != prints[1]:
        return None, f"the two runs audited different {source} data (data fingerprints differ)"
    b = base_out.frame[base_out.frame["source"] == source].reset_index(drop=True)
    c = cand_out.frame[cand_out.frame["source"] == source].reset_index(drop=True)
    order = _match_images(b, c)
    if order is None:
        return None, f"the outcome files hold different {source} images"
    return _Pairing(source, b, c.iloc[order].reset_index(drop=True), bspec, cspec), None


def _why_none(o) -> str:
    if o is None or (o.frame is None and not o.note):
        return "records no per-image outcomes"
    return o.note or "records no per-image outcomes for this probe"


def _match_images(b, c):
    """Positions in `c` of each of `b`'s images; the k-th copy of a repeated image pairs with
    the k-th copy. None unless both hold exactly the same images."""
    import pandas as pd

    def keys(f):
        return pd.MultiIndex.from_arrays([f["image"], f.groupby("image").cumcount()])
    bk, ck = keys(b), keys(c)
    if len(bk) != len(ck) or not ck.is_unique:
        return None
    order = ck.get_indexer(bk)
    return None if (order < 0).any() else order


def _identity(key: dict) -> tuple:
    """A row's identity without its probe and group (compare's row key, which holds only the
    declared identity keys), or a column's key: equal exactly when the column is the row's."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in key.items()
                        if k not in ("probe", "group_by", "group")))


def _column(spec: dict, ident: tuple) -> str | None:
    """The one column naming this identity (two naming it: ambiguous, none)."""
    cols = [c for c, key in spec["columns"].items() if _identity(key) == ident]
    return cols[0] if len(cols) == 1 else None


def _test(row: dict, pairing: _Pairing) -> dict | None:
    if row["worse"] is None or row["delta"] is None:
        return None  # never a regression: testing it would only widen the family
    if None in (*row["base_ci"], *row["cand_ci"]):
        return None  # too few images for a CI: too few for a verdict
    ident = _identity(row["key"])
    bc, cc = (_column(s, ident) for s in (pairing.bspec, pairing.cspec))
    mask = _mask(row["key"], pairing)
    if bc is None or cc is None or mask is None or not mask.any():
        return None
    before = pairing.base[bc].to_numpy()[mask].astype(bool)
    after = pairing.cand[cc].to_numpy()[mask].astype(bool)
    if abs(before.mean() - row["base"]) > TOLERANCE or abs(after.mean() - row["cand"]) > TOLERANCE:
        log.debug("%s %s: outcomes do not reproduce the row; unpaired", row["probe"], row["key"])
        return None
    return _statistics(before, after, (bc, cc))


def _statistics(before: np.ndarray, after: np.ndarray, columns: tuple) -> dict:
    from audit import stats

    moved_in, moved_out = int((~before & after).sum()), int((before & ~after).sum())
    _, lo, hi = stats.paired_bootstrap_diff(after, before, n_boot=N_BOOT, seed=SEED, alpha=ALPHA)
    return {"n": int(before.size), "moved_in": moved_in, "moved_out": moved_out,
            "p_value": mcnemar_exact(moved_in, moved_out), "delta_ci": [lo, hi],
            "columns": columns}


def _mask(key: dict, pairing: _Pairing):
    """The row's images: all, or those labelled with its group in both runs alike."""
    group_by = key.get("group_by")
    if group_by == "overall":
        return np.ones(len(pairing.base), bool)
    if group_by not in pairing.labels:
        pairing.labels[group_by] = _labels(group_by, pairing)
    labels = pairing.labels[group_by]
    return None if labels is None else labels == str(key.get("group"))


def _labels(group_by: str, pairing: _Pairing):
    bcol, ccol = pairing.bspec["groups"].get(group_by), pairing.cspec["groups"].get(group_by)
    if bcol is None or ccol is None:
        return None
    labels = pairing.base[bcol].astype(str).to_numpy()
    # A probe that labels the images differently now (its age bands moved) has no common group.
    return labels if (labels == pairing.cand[ccol].astype(str).to_numpy()).all() else None


def _moved(tests: list, pairings: dict) -> tuple[list, dict]:
    """Per tested column, the images that moved in and out over all its source's images (ids
    only), and each listed image's group labels, once per source."""
    seen, moved, images = set(), [], {}
    for row, found in tests:
        probe, (bc, cc) = row["probe"], found["columns"]
        if (probe, bc) in seen:
            continue
        seen.add((probe, bc))
        p = pairings[probe]
        before, after = (f[col].to_numpy().astype(bool) for f, col in ((p.base, bc), (p.cand, cc)))
        ids = p.base["image"].to_numpy()
        into, out_of = ids[~before & after].tolist(), ids[before & ~after].tolist()
        moved.append({"probe": probe, "column": bc, "source": p.source, "title": row["title"],
                      "key": {k: v for k, v in row["key"].items()
                              if k not in ("probe", "group_by", "group")},
                      "into": into, "out_of": out_of})
        labels = images.setdefault(p.source, {})
        groups = {g: p.base[col].astype(str).to_numpy() for g, col in p.bspec["groups"].items()}
        for i in np.flatnonzero(before != after):
            if ids[i] not in labels:
                labels[ids[i]] = {g: v[i] for g, v in groups.items()}
    return moved, images
