"""Person classes by group (FACET, Gustafson et al. 2023): is a nurse recognised as often when
the nurse presents as a man?

Every person's crop gets the argmax over a label set of person classes (FACET's 52: nurse,
gardener, dancer, ...). The probe reports each class's recall (the share of its people put in
it), overall and per group of each attribute present (perceived gender presentation, skin tone
bucket, age group), and the per-class recall gap between groups with a bootstrap CI, tested
with Fisher's exact test under one multiple-comparison correction over classes x groups.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from audit import persons, stats, zeroshot
from audit import reference as published
from audit.errors import UserError
from audit.findings import with_robustness
from audit.labels import check_templates, short_name
from audit.registry import Metric, register_probe
from audit.results import ProbeResult, config_dict, row
from audit.settings import setting
from audit.tasks import label_set_weights

log = logging.getLogger(__name__)

HEADLINE = "ensemble"  # the `template` of headline rows (what gates match by default)
REST = "rest"          # `versus` of a gap of one group against all other known groups


@register_probe
class PersonClassBias:
    name = "person_class_bias"
    title = "Person classes by group (FACET)"
    metrics = {
        "accuracy": Metric("People put in their own class", "fraction", worse="down",
                           description="top-1 zero-shot accuracy over all people"),
        "mean_recall": Metric("Mean per-class recall", "fraction", worse="down",
                              description="the unweighted mean over classes of each class's recall"),
        "recall": Metric("Recall of the class", "fraction", worse="down",
                         description="share of the class's people classified as that class"),
        "recall_gap": Metric("Recall gap between groups", "points",
                             description="the group's recall of the class minus the other group's "
                                         "(or the rest's); FACET's Table 4 is masculine minus feminine"),
        "max_recall_gap": Metric("Largest recall gap of an attribute", "points", worse="up",
                                 description="the largest |gap| over the classes tested; its CI is "
                                             "that class's, not of the maximum"),
        **{f"recall_gap_{end}": Metric(f"Recall gap, {word} across wordings", "points",
                                       description=f"the {word} gap under one panel wording alone")
           for end, word in (("min", "lowest"), ("max", "highest"))},
    }
    row_keys = ("class", "versus", "attribute", "template")
    headline = ({"metric": ["accuracy", "mean_recall", "max_recall_gap"]},)
    reference = published.builtin("person_class_bias")  # FACET's Table 4 (CLIP ViT-B/32), fractions
    requires = ("persons",)

    @dataclass(frozen=True)
    class Config:
        # The person classes to classify into (label_sets/facet_classes.yaml: FACET's 52).
        label_set: str = "facet_classes"
        # "label_set": score every person over all the set's classes (FACET's protocol);
        # "present": only over the classes the source has people of.
        classes: str = "label_set"
        # Prompt templates with "{}"; empty means the label set's panel (an ensemble, each wording
        # also alone).
        templates: tuple = ()
        # Group columns compared (those the source has): FACET's derived attributes.
        attributes: tuple = ("gender_presentation", "skin_tone_group", "age_group")
        # "attribute:group|versus": compared as one pair, group minus versus (FACET's Table 4).
        # Any other attribute: with two known groups the first minus the second, with more,
        # each group minus the rest.
        pairs: tuple = ("gender_presentation:masculine|feminine",)
        # Group labels that are no group (no annotation): in every overall number, never compared.
        unknown: tuple = ("unknown", "")
        # Bootstrap resamples for every confidence interval.
        n_boot: int = setting(1000, min=1)
        # A group with fewer people of a class gets a value but no CI, and never a finding.
        min_group_n: int = setting(20, min=1)
        # 1 - confidence level of the intervals; the family-wise error rate of the findings.
        alpha: float = setting(0.05, above=0, below=1)
        # A significant gap at least this large (a fraction: 0.10 = 10 points) is "high".
        large_gap: float = setting(0.10, above=0, max=1)

    def run(self, ctx, cfg: Config) -> ProbeResult:
        check_templates(cfg.templates, where="person_class_bias templates")
        if cfg.classes not in ("label_set", "present"):
            raise UserError(f"person_class_bias.classes must be 'label_set' or 'present', not {cfg.classes!r}")
        label_set = ctx.label_set(cfg.label_set)
        pairs = _parse_pairs(cfg.pairs)
        source = ctx.sources["persons"]
        keep, truth, classes = _match_classes(source.table["label"].astype(str).to_numpy(),
                                              label_set["classes"], cfg.classes, where=source.spec)
        source = source.subset(np.flatnonzero(keep)) if not keep.all() else source
        img = ctx.images(source)  # encoded only once the config and the classes are known good
        out = _classify(ctx, img, classes, label_set, cfg)
        data = _Data(truth, [c["label"] for c in classes], out, _groups(source.table, cfg), pairs)
        rows, tests = _all_rows(data, cfg, short_name(label_set["name"]), seed=ctx.seed)
        findings = _findings(tests, data, cfg)
        summary = _summary(rows, data, cfg, left_out=int((~keep).sum()), label_set=label_set)
        return ProbeResult(status="ok", summary=summary, rows=rows, findings=findings, config=config_dict(cfg))


# --- classes and classification -----------------------------------------------------------

def _key(text: str) -> str:
    """FACET writes 'disk_jockey', a folder of crops may say 'Disk jockey': one class."""
    return re.sub(r"[\s_]+", " ", str(text)).strip().lower()


def _match_classes(labels, classes, mode: str, *, where: str):
    """(kept people, class index of each kept person, the classes scored). People whose class
    the label set lacks are left out with a warning; "present" scores only the classes the
    source has people of."""
    index = {}
    for c in classes:
        for name in (c.get("class"), c["label"]):
            if name is not None:
                index.setdefault(_key(name), c)
    found = [index.get(_key(v)) for v in labels]
    keep = np.array([c is not None for c in found])
    if not keep.any():
        raise UserError(f"{where}: no person's label is a class of the label set "
                        f"(labels such as {', '.join(sorted(set(map(str, labels)))[:5])})")
    if not keep.all():
        missing = sorted({str(v) for v, c in zip(labels, found) if c is None})
        log.warning("%s: %d people of %d class(es) the label set lacks left out: %s", where,
                    int((~keep).sum()), len(missing), ", ".join(missing[:10]))
    if mode == "present":
        present = {id(c) for c in found if c is not None}
        classes = [c for c in classes if id(c) in present]
    order = {id(c): i for i, c in enumerate(classes)}
    truth = np.array([order[id(c)] for c in found if c is not None], dtype=np.int64)
    return keep, truth, classes


@dataclass
class _Outcome:
    predicted: np.ndarray      # (n,) class index per person under the headline (ensemble) weights
    wordings: dict             # panel wording -> (n,) class index; {} when templates are forced
    templates: int             # how many templates the headline ensembles


def _classify(ctx, img, classes, label_set, cfg) -> _Outcome:
    """The headline is the ensemble of the templates (the label set's panel unless templates are
    forced); each panel wording alone is classified from the same text embeddings."""
    head, per_wording = label_set_weights(ctx, {**label_set, "classes": classes}, templates=cfg.templates)
    wordings = {w: zeroshot.predict(img, weights) for w, weights in per_wording.items()}
    return _Outcome(zeroshot.predict(img, head), wordings, len(cfg.templates or label_set["templates"]))


@dataclass
class _Data:
    truth: np.ndarray          # (n,) class index per person
    names: list                # class text, in class order
    outcome: _Outcome
    groups: dict               # attribute -> (n,) group label per person
    pairs: dict                # attribute -> (group, versus)

    def correct(self, wording=None) -> np.ndarray:
        pred = self.outcome.predicted if wording is None else self.outcome.wordings[wording]
        return pred == self.truth


def _groups(table, cfg) -> dict:
    return {a: table[a].astype(str).to_numpy() for a in cfg.attributes if a in table}


def _parse_pairs(pairs) -> dict:
    out = {}
    for p in pairs:
        attr, _, rest = str(p).partition(":")
        group, _, versus = rest.partition("|")
        if not (attr and group and versus):
            raise UserError(f"person_class_bias.pairs: {p!r} is not 'attribute:group|versus'")
        out[attr] = (group, versus)
    return out


# --- rows ---------------------------------------------------------------------------------

def _order(attr: str, groups) -> list:
    """FACET's order where it has one (young, middle, older), else natural ("4-6" before "7-10")."""
    known = [v for v in persons.ONE_HOT.get(attr, {}).values() if v]
    def key(g):
        m = re.search(r"\d+", g)
        return (known.index(g) if g in known else len(known), int(m.group()) if m else -1, g)
    return sorted(groups, key=key)


def _contrasts(attr: str, labels, data: _Data, cfg) -> list[tuple]:
    """(group, versus) pairs compared for an attribute: the declared pair, else the two known
    groups, else each group against the rest."""
    known = _order(attr, {g for g in set(labels.tolist()) if g not in cfg.unknown})
    if attr in data.pairs:
        return [data.pairs[attr]] if set(data.pairs[attr]) <= set(known) else []
    if len(known) == 2:
        return [tuple(known)]
    return [(g, REST) for g in known] if len(known) > 2 else []


def _sides(labels, group, versus, cfg):
    """Masks of the two sides of a contrast; the rest is every other known group."""
    a = labels == group
    b = labels == versus if versus != REST else ~a & ~np.isin(labels, list(cfg.unknown))
    return a, b


def _all_rows(data: _Data, cfg, label_set: str, *, seed):
    """Headline rows (`template: "ensemble"`, with CIs) and per-wording rows; and the gap tests
    (one per class x contrast with both sides of min_group_n people), for the findings."""
    correct = data.correct()
    rows = _accuracy_rows(correct, data, cfg, seed=seed)
    tests = []
    for c, name in enumerate(data.names):
        member = data.truth == c
        if not member.any():
            continue
        rows += _recall_rows(correct[member], data, member, cfg, name, seed=seed)
        for attr, labels in data.groups.items():
            for group, versus in _contrasts(attr, labels[member], data, cfg):
                r, test = _gap(correct, data, member, attr, group, versus, cfg, name, seed=seed)
                rows.append(r)
                if test:
                    tests.append(test)
    _correct_for_family(tests, cfg)
    rows += _max_gap_rows(tests)
    for r in rows:
        r["label_set"], r["template"] = label_set, HEADLINE
    rows += _wording_rows(data, tests, label_set)
    return rows, tests


def _accuracy_rows(correct, data, cfg, *, seed) -> list[dict]:
    value, lo, hi = stats.bootstrap_rate(correct, n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha)
    rows = [row("accuracy", value, ci_low=lo, ci_high=hi, n=int(correct.size)),
            row("mean_recall", _mean_recall(correct, data.truth), n=int(correct.size))]
    for attr, labels in data.groups.items():
        found = stats.rates_by_group(correct, labels, n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha,
                                     min_n=cfg.min_group_n)
        for r in found:
            if "disparity" not in r:
                rows.append(row("accuracy", r.pop("value"), group_by=attr, **r))
        for g in _order(attr, set(labels.tolist())):
            m = labels == g
            rows.append(row("mean_recall", _mean_recall(correct[m], data.truth[m]), group_by=attr, group=g, n=int(m.sum())))
    return rows


def _mean_recall(correct, truth) -> float | None:
    """Unweighted mean over the classes present of each class's recall."""
    if truth.size == 0:
        return None
    classes, codes = np.unique(truth, return_inverse=True)
    return float((np.bincount(codes, weights=correct) / np.bincount(codes)).mean())


def _recall_rows(x, data, member, cfg, name, *, seed) -> list[dict]:
    value, lo, hi = stats.bootstrap_rate(x, n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha)
    rows = [row("recall", value, ci_low=lo, ci_high=hi, n=int(x.size), **{"class": name})]
    for attr, labels in data.groups.items():
        found = stats.rates_by_group(x, labels[member], n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha,
                                     min_n=cfg.min_group_n)
        by = {r["group"]: r for r in found if "disparity" not in r}
        for g in _order(attr, by):
            r = dict(by[g])
            rows.append(row("recall", r.pop("value"), group_by=attr, **r, **{"class": name}))
    return rows


def _gap(correct, data, member, attr, group, versus, cfg, name, *, seed):
    """The gap row of one class and contrast, and its test when both sides have min_group_n
    people (else the row has a value, no CI, and the small-group note)."""
    a, b = (m & member for m in _sides(data.groups[attr], group, versus, cfg))
    na, nb = int(a.sum()), int(b.sum())
    keys = {"class": name, "versus": versus, "n_group": na, "n_versus": nb}
    if min(na, nb) < cfg.min_group_n:
        value = float(correct[a].mean() - correct[b].mean()) if na and nb else None
        return row("recall_gap", value, group_by=attr, group=group, n=na + nb, note=stats.TOO_FEW, **keys), None
    value, lo, hi = stats.bootstrap_diff_of_means(correct[a], correct[b], n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha)
    p = stats.difference_p_value(int(correct[a].sum()), na, int(correct[b].sum()), nb)
    r = row("recall_gap", value, group_by=attr, group=group, ci_low=lo, ci_high=hi, n=na + nb,
            recall_group=float(correct[a].mean()), recall_versus=float(correct[b].mean()), p_value=p, **keys)
    return r, {"row": r, "a": a, "b": b}


def _correct_for_family(tests, cfg) -> None:
    """Bonferroni over every gap tested (classes x attributes x contrasts), so a fair model
    raises a finding in at most alpha of its runs; each wording alone is re-tested at the same
    cut. Holm would flag a little more, but gives no single cut to re-test a wording at."""
    cutoff = cfg.alpha / max(1, len(tests))
    for t in tests:
        t["row"]["p_adjusted"] = min(1.0, t["row"]["p_value"] * len(tests))
        t["cutoff"] = cutoff


def _max_gap_rows(tests) -> list[dict]:
    """Per attribute, the tested gap largest in size, as a headline number (what a gate reads)."""
    rows = []
    for attr in dict.fromkeys(t["row"]["group_by"] for t in tests):
        top = max((t["row"] for t in tests if t["row"]["group_by"] == attr), key=lambda r: abs(r["value"]))
        sign = 1 if top["value"] >= 0 else -1
        lo, hi = sorted((sign * top["ci_low"], sign * top["ci_high"])) if top["ci_low"] is not None else (None, None)
        rows.append(row("max_recall_gap", abs(top["value"]), ci_low=lo, ci_high=hi, n=top["n"], attribute=attr,
                        **{"class": top["class"]}, gap_group=top["group"], versus=top["versus"]))
    return rows


def _wording_rows(data, tests, label_set) -> list[dict]:
    """Accuracy under each wording alone (all people and per group), and each tested gap's
    lowest and highest value across the wordings (carrying the wording): the spread a verdict
    may hang on, without 12x every row."""
    rows = []
    for w in data.outcome.wordings:
        correct = data.correct(w)
        rows.append(row("accuracy", float(correct.mean()), label_set=label_set, n=int(correct.size), template=w))
        for attr, labels in data.groups.items():
            for g in _order(attr, set(labels.tolist())):
                m = labels == g
                rows.append(row("accuracy", float(correct[m].mean()), label_set=label_set, group_by=attr,
                                group=g, n=int(m.sum()), template=w))
    for t in tests:
        per = _per_wording(t, data)
        r = t["row"]
        keys = {k: r[k] for k in ("group_by", "group", "n", "class", "versus")}
        for end, pick in (("min", min), ("max", max)):
            if per:
                w = pick(per, key=lambda w: per[w]["gap"])
                rows.append(row(f"recall_gap_{end}", per[w]["gap"], label_set=label_set, template=w, **keys))
    return rows


def _per_wording(test, data) -> dict:
    """{wording: {gap, group, versus, p}} of one tested gap (cached on the test)."""
    if "per_wording" not in test:
        a, b = test["a"], test["b"]
        test["per_wording"] = {}
        for w in data.outcome.wordings:
            x = data.correct(w)
            ka, kb = int(x[a].sum()), int(x[b].sum())
            na, nb = int(a.sum()), int(b.sum())
            test["per_wording"][w] = {"gap": ka / na - kb / nb, "group": ka / na, "versus": kb / nb,
                                      "p": stats.difference_p_value(ka, na, kb, nb)}
    return test["per_wording"]


# --- findings and summary -------------------------------------------------------------------

def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def _side(versus: str) -> str:
    return "the rest" if versus == REST else f"{versus} people"


def _findings(tests, data, cfg) -> list[dict]:
    """A gap whose Fisher p is below alpha / (gaps tested) is a finding (high from large_gap
    points); each is re-tested under each panel wording alone at the same cut and in the same
    direction (k of K wordings; under two thirds: low, wording-dependent)."""
    out = []
    for t in sorted(tests, key=lambda t: t["row"]["p_value"]):
        r = t["row"]
        if r["p_value"] >= t["cutoff"]:
            continue
        lo, hi = 100 * r["ci_low"], 100 * r["ci_high"]
        message = (f"'{r['class']}' is recognised for {_pct(r['recall_group'])} of {r['group']} people "
                   f"vs {_pct(r['recall_versus'])} of {_side(r['versus'])} ({r['group_by']}: "
                   f"{100 * r['value']:+.1f} points, {1 - cfg.alpha:.0%} CI {lo:+.1f} to {hi:+.1f}).")
        evidence = {k: r[k] for k in ("metric", "label_set", "group_by", "group", "versus", "class", "value",
                                      "ci_low", "ci_high", "n_group", "n_versus", "recall_group",
                                      "recall_versus", "p_value", "p_adjusted")}
        evidence["p_cutoff"] = t["cutoff"]
        finding = {"severity": "high" if abs(r["value"]) >= cfg.large_gap else "medium",
                   "message": message, "evidence": evidence}
        out.append(with_robustness(finding, _robustness(t, data)))
    return out


def _robustness(test, data) -> dict:
    """Wordings under which the gap is significant alone (same cut) with the headline's sign;
    the strip shows the group's recall (dots) over the other side's (rings)."""
    per = _per_wording(test, data)
    if not per:
        return {}
    sign = np.sign(test["row"]["value"])
    held = [w for w, v in per.items() if v["p"] < test["cutoff"] and np.sign(v["gap"]) == sign]
    return {"wordings_holding": len(held), "wordings": len(per), "wordings_held": held,
            "per_wording": {w: v["group"] for w, v in per.items()},
            "per_wording_rest": {w: v["versus"] for w, v in per.items()},
            "per_wording_gap": {w: v["gap"] for w, v in per.items()}}


def _summary(rows, data, cfg, *, left_out: int, label_set) -> dict:
    head = {r["metric"]: r for r in rows if r["group_by"] == "overall" and r["template"] == HEADLINE
            and r["metric"] in ("accuracy", "mean_recall")}
    k = data.outcome.templates
    out = {"people": int(data.truth.size), "people_left_out": left_out, "classes": len(data.names),
           "label_set": label_set["name"], "templates": f"ensemble of {k} wordings" if k > 1 else "one wording",
           "wordings": len(data.outcome.wordings), "attributes": ", ".join(data.groups) or "none",
           "accuracy": head["accuracy"]["value"], "accuracy_ci_low": head["accuracy"]["ci_low"],
           "accuracy_ci_high": head["accuracy"]["ci_high"], "mean_recall": head["mean_recall"]["value"],
           "gaps_tested": sum(1 for r in rows if r["metric"] == "recall_gap" and r.get("p_value") is not None)}
    for r in rows:
        if r["metric"] == "max_recall_gap":
            out[f"largest_gap_{r['attribute']}"] = (f"{r['class']}: {r['gap_group']} vs {r['versus']}")
            out[f"largest_gap_{r['attribute']}_value"] = r["value"]
    ref = published.of(PersonClassBias)
    if ref:
        out["reference_model"] = ref["cites"]
    return out
