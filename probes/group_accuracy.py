"""Worst-group accuracy: zero-shot accuracy per group of any labelled source (DataComp's
geographic and income robustness: Dollar Street's `acc_top5_wg`, the top-5 accuracy of the worst
income group; GeoDE's `acc_wg`, the top-1 accuracy of the worst region).

Every classify source with group columns (`audit run --group-by`, else the known ones it has:
audit.groups.KNOWN_GROUP_COLUMNS) is classified zero-shot; per group of each column the probe
reports top-1 accuracy (and top-5 with 5 or more classes) with bootstrap CIs, the worst group,
and each group's gap to the mean over groups and to the overall accuracy. A numeric column with
many values (a raw income) is binned first (label_sets/groups/income_quartiles.yaml).

- Headline gap: to the unweighted mean over groups (each group counts once, whatever its size;
  the overall accuracy is mostly the largest group's, so a gap to it shrinks as a group grows).
  The gap to the overall accuracy is reported beside it.
- Minimum group size: a group under `min_n` images gets its accuracy, no CI, no test, and takes
  no part in the mean, the worst group or the gaps.
- Intervals: a stratified bootstrap (each group's images resampled within the group, sizes
  fixed), one set of draws per column, so a gap's interval keeps the groups' dependence on the
  mean they share. The worst group's interval is that group's own accuracy interval.
- Findings: "group X is below the rest", a one-sided Fisher exact test of the group's error rate
  against all images' (audit.stats.excess_tests: the test every probe uses), Holm-corrected over
  every group, column, k and source tested (the family-wise error stays at alpha).
- Wording: class weights are the ensemble of open_clip's 80 `openai` templates (as
  distribution_shift; the CLIP convention). Each finding is re-tested under each wording of a
  panel alone (label_sets/templates/label_wording.yaml: bare labels and short captions, unlike
  the ensemble's "a photo of a {}" family, so a verdict that survives them does not hang on one
  phrasing), Holm-corrected over the same family; under fewer than two thirds of them it is
  wording-dependent and low (audit.stats.is_robust, as fairface_label_bias).
A source without group columns costs nothing: with none, the probe is skipped before encoding.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from audit import groups, stats
from audit.findings import with_robustness
from audit.registry import Metric, register_probe
from audit.results import ProbeResult, config_dict, row
from audit.settings import setting

log = logging.getLogger(__name__)
HEADLINE = "ensemble"  # the `template` of headline rows (audit.policy.headline_wording)
TOPK = {1: "", 5: "_top5"}  # k -> metric suffix
WORST = {1: "acc_wg", 5: "acc_top5_wg"}  # DataComp's names


def _metrics() -> dict:
    out = {}
    for k, sfx in TOPK.items():
        top = f"top-{k}"
        out[f"accuracy{sfx}"] = Metric(f"Accuracy ({top})", "fraction", worse="down",
                                       description=f"share of images whose class is in the {k} best-scored")
        out[WORST[k]] = Metric(f"Worst-group accuracy ({top})", "fraction", worse="down",
                               description="accuracy of the lowest group with enough images; its CI is that group's")
        out[f"group_mean_accuracy{sfx}"] = Metric(f"Mean accuracy over groups ({top})", "fraction", worse="down",
                                                  description="unweighted mean over groups with enough images")
        out[f"gap_to_mean{sfx}"] = Metric(f"Gap to the mean over groups ({top})", "points", worse="down",
                                          description="group accuracy minus the mean over groups (headline gap)")
        out[f"gap_to_overall{sfx}"] = Metric(f"Gap to the overall accuracy ({top})", "points", worse="down",
                                             description="group accuracy minus the accuracy over all images")
    return out


@register_probe
class GroupAccuracy:
    """Zero-shot accuracy per group of a labelled source (region, income...), the worst group and the gaps."""
    name = "group_accuracy"
    title = "Worst-group accuracy"
    metrics = _metrics()
    row_keys = ("task", "template", "template_set")
    # Per source its accuracy over all images and, per group column, the worst group's.
    headline = ({"metric": ["accuracy", "accuracy_top5", "acc_wg", "acc_top5_wg"]},)
    requires = ("classify",)

    @dataclass(frozen=True)
    class Config:
        templates: str = "openai"          # class weights: open_clip's 80-template ensemble
        panel: str = "label_wording"       # wordings each finding is re-tested under (label_sets/templates)
        n_boot: int = setting(1000, min=1)                     # bootstrap resamples
        alpha: float = setting(0.05, above=0, below=1)         # family-wise error of the findings; 1 - CI level
        min_n: int = setting(20, min=1)                        # smaller groups: a value, no CI, no test

    def run(self, ctx, cfg: Config) -> ProbeResult:
        from audit.tasks import classification_tasks

        tasks = [(t, cols) for t in classification_tasks(ctx, attributes=()) if (cols := _columns(t.source))]
        if not tasks:
            return ProbeResult.skipped(
                f"no classify source has a group column ({', '.join(groups.KNOWN_GROUP_COLUMNS)}); "
                "name one with --group-by", config=cfg)
        rows, tests, summary = [], [], _wording_summary(cfg)
        for task, cols in tasks:
            r, t, s = self._task(ctx, task, cols, cfg)
            rows, tests = rows + r, tests + t
            summary.update(s)
        return ProbeResult(status="ok", summary=summary, rows=rows, findings=_findings(tests, cfg),
                           config=config_dict(cfg))

    def _task(self, ctx, task, cols, cfg):
        hits, per_wording, wordings = _classify(ctx, task, cfg)
        rows, tests, summary = [], [], {}
        for k, correct in hits.items():
            v, lo, hi = stats.bootstrap_rate(correct, n_boot=cfg.n_boot, seed=ctx.seed, alpha=cfg.alpha)
            rows.append(row(f"accuracy{TOPK[k]}", v, ci_low=lo, ci_high=hi, n=len(correct), task=task.name,
                            template=HEADLINE, template_set=cfg.templates))
        for col in cols:
            labels, note = _group_labels(task.source.table, col)
            if note:
                summary[f"{task.name} by {col}"] = note
            for k, correct in hits.items():
                r, t = _column(task.name, col, labels, correct, per_wording[k], wordings, k, cfg, ctx.seed)
                rows, tests = rows + r, tests + t
                summary.update(_worst_summary(task.name, col, k, r))
        bins = task.source.attrs.get("group_bins")
        if bins:
            summary[f"{task.name}: bins"] = bins
        return rows, tests, summary


def _columns(source) -> list[str]:
    """The runner's choice (--group-by, checked there), else the known columns the table has."""
    if "group_by" in source.attrs:
        return list(source.attrs["group_by"])
    return groups.group_columns_of(source.table, None, where=source.name)


def _wording_summary(cfg) -> dict:
    from audit.tasks import named_templates

    return {"templates": f"ensemble of {len(named_templates(cfg.templates))} ({cfg.templates})",
            "wordings": f"{len(named_templates(cfg.panel))} ({cfg.panel})",
            "headline_gap": "gap_to_mean (to the unweighted mean over groups)",
            "min_n": cfg.min_n, "correction": "Holm over every group tested"}


# -- classification ---------------------------------------------------------------------------

def _classify(ctx, task, cfg):
    """({k: correct per image} under the ensemble, {k: (n, K) correct per panel wording}, the
    wordings); the ensemble's and the panel's prompts in one text encode."""
    from audit.tasks import ensemble, named_templates, template_weights

    ens, panel = named_templates(cfg.templates), named_templates(cfg.panel)
    weights = template_weights(ctx, task.texts, ens + panel)             # (T, C, D)
    img = ctx.images(task.source)
    ks = [k for k in TOPK if k == 1 or len(task.labels) >= k]  # top-5 of under 5 classes is 1
    scores = img @ ensemble(weights[:len(ens)]).T
    hits = {k: topk_correct(scores, task.truth, k) for k in ks}
    per = [img @ w.T for w in weights[len(ens):]]
    per_wording = {k: np.stack([topk_correct(s, task.truth, k) for s in per], axis=1) for k in ks}
    return hits, per_wording, panel


def topk_correct(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Whether each image's class is among its k best-scored (argmax for k = 1)."""
    if k == 1:
        return scores.argmax(axis=1) == truth
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return (top == truth[:, None]).any(axis=1)


def _group_labels(table, col):
    """(label per image, None) or, for a numeric column with many values, its bins and a note."""
    values = table[col].astype(str).to_numpy()
    if len(set(values)) > groups.NUMERIC_GROUPS_MAX and groups.is_numeric(values):
        rule = groups.load_bins()
        binned, edges = groups.bin_numeric(values.astype(float), rule)
        return np.array(binned), f"{col} binned into {rule['name']} at {', '.join(f'{e:g}' for e in edges)}"
    return values, None


# -- per column: groups, gaps, the worst group --------------------------------------------------

def group_table(correct, labels, *, min_n: int, n_boot: int, seed: int) -> dict:
    """Per group (sorted names): n, accuracy and stratified-bootstrap draws (B, G) of it; the
    mask of groups with at least min_n images; the mean over those and the overall accuracy,
    each with its draws."""
    names, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    n = np.bincount(codes, minlength=len(names))
    acc = np.bincount(codes, weights=np.asarray(correct, dtype=float), minlength=len(names)) / n
    rng = np.random.default_rng([seed, 23])
    draws = rng.binomial(n, acc, size=(max(n_boot, 1), len(names))) / n
    big = n >= min_n
    out = {"names": names, "n": n, "acc": acc, "draws": draws, "big": big,
           "overall": float(acc @ n / n.sum()), "overall_draws": draws @ n / n.sum()}
    if big.any():
        out["mean"], out["mean_draws"] = float(acc[big].mean()), draws[:, big].mean(axis=1)
    return out


def _ci(samples, alpha):
    lo, hi = stats.percentile_ci(samples, alpha=alpha)
    return float(lo), float(hi)


def _column(task, col, labels, correct, wording_correct, wordings, k, cfg, seed):
    """Rows of one group column at top-k (headline groups, gaps, mean, worst; each group under
    each wording alone) and its group-vs-all tests."""
    g = group_table(correct, labels, min_n=cfg.min_n, n_boot=cfg.n_boot, seed=seed)
    sfx, keys = TOPK[k], dict(task=task, template=HEADLINE, template_set=cfg.templates, group_by=col)
    rows = []
    for i, name in enumerate(g["names"]):
        big = bool(g["big"][i])
        lo, hi = _ci(g["draws"][:, i], cfg.alpha) if big else (None, None)
        rows.append(row(f"accuracy{sfx}", float(g["acc"][i]), group=str(name), ci_low=lo, ci_high=hi,
                        n=int(g["n"][i]), **keys, **({} if big else {"note": stats.TOO_FEW})))
        if big:
            for gap, ref in (("gap_to_mean", "mean"), ("gap_to_overall", "overall")):
                lo, hi = _ci(g["draws"][:, i] - g[f"{ref}_draws"], cfg.alpha)
                rows.append(row(f"{gap}{sfx}", float(g["acc"][i] - g[ref]), group=str(name),
                                ci_low=lo, ci_high=hi, n=int(g["n"][i]), **keys))
    rows += _worst_rows(g, k, keys, cfg)
    rows += _wording_rows(labels, wording_correct, wordings, k, cfg.panel, task, col, cfg.min_n)
    tests = _tests(task, col, k, labels, correct, wording_correct, wordings, g, rows, cfg)
    return rows, tests


def _worst_rows(g, k, keys, cfg) -> list[dict]:
    """The mean over groups and the worst group (at least two groups with min_n images)."""
    big = np.flatnonzero(g["big"])
    n_all = int(g["n"].sum())
    if len(big) < 2:
        note = {"note": "fewer than two groups with enough images"}
        return [row(WORST[k], None, group="all", n=n_all, **keys, **note)]
    lo, hi = _ci(g["mean_draws"], cfg.alpha)
    out = [row(f"group_mean_accuracy{TOPK[k]}", g["mean"], group="all", ci_low=lo, ci_high=hi,
               n=n_all, groups=len(big), **keys)]
    w = big[int(np.argmin(g["acc"][big]))]  # ties: the first name
    lo, hi = _ci(g["draws"][:, w], cfg.alpha)
    out.append(row(WORST[k], float(g["acc"][w]), group="all", ci_low=lo, ci_high=hi, n=int(g["n"][w]),
                   worst_group=str(g["names"][w]), gap_to_mean=float(g["acc"][w] - g["mean"]),
                   gap_to_overall=float(g["acc"][w] - g["overall"]), groups=len(big), **keys))
    return out


def _wording_rows(labels, wording_correct, wordings, k, panel, task, col, min_n) -> list[dict]:
    """Each group's accuracy under each panel wording alone (no CI: the evidence of findings)."""
    names, codes = np.unique(labels, return_inverse=True)
    n = np.bincount(codes, minlength=len(names))
    acc = np.stack([np.bincount(codes, weights=wording_correct[:, j], minlength=len(names)) / n
                    for j in range(len(wordings))], axis=1)                       # (G, K)
    return [row(f"accuracy{TOPK[k]}", float(acc[i, j]), group_by=col, group=str(name), n=int(n[i]),
                task=task, template=w, template_set=panel, **({"note": stats.TOO_FEW} if n[i] < min_n else {}))
            for i, name in enumerate(names) for j, w in enumerate(wordings)]


def _worst_summary(task, col, k, rows) -> dict:
    worst = next((r for r in rows if r["metric"] == WORST[k] and r["value"] is not None), None)
    if worst is None:
        return {}
    return {f"{task} by {col}: {WORST[k]}": worst["value"],
            f"{task} by {col}: {WORST[k]} group": worst["worst_group"]}


# -- findings -----------------------------------------------------------------------------------

def _tests(task, col, k, labels, correct, wording_correct, wordings, g, rows, cfg) -> list[dict]:
    """Per group with min_n images: the one-sided Fisher exact p of its error rate over all
    images', under the ensemble (column 0) and each wording alone (columns 1..K)."""
    errors = ~np.column_stack([correct, wording_correct]).astype(bool)
    out = []
    for t in stats.excess_tests(errors, labels, min_n=cfg.min_n):
        head = next(r for r in rows if r["metric"] == f"accuracy{TOPK[k]}" and r["group"] == t["group"]
                    and r["template"] == HEADLINE)
        rest = errors[labels != t["group"]].mean(axis=0) if (labels != t["group"]).any() else t["overall"]
        out.append({"task": task, "group_by": col, "group": t["group"], "k": k, "row": head,
                    "p": t["p"], "error": t["rate"], "error_overall": t["overall"],
                    "error_rest": rest, "wordings": list(wordings), "overall": g["overall"],
                    "gap_to_mean": float(head["value"] - g["mean"]) if "mean" in g else None})
    return out


def _findings(tests, cfg) -> list[dict]:
    """Holm over every test, under the ensemble and again under each wording alone."""
    if not tests:
        return []
    p = np.stack([t["p"] for t in tests])                                    # (m, 1 + K)
    adjusted = np.column_stack([stats.holm(p[:, j]) for j in range(p.shape[1])])
    out = []
    for t, adj in zip(tests, adjusted):
        if adj[0] < cfg.alpha and t["error"][0] > t["error_overall"][0]:
            out.append(_finding(t, float(adj[0]), len(tests), cfg, _robustness(t, adj[1:], cfg.alpha)))
    return out


def _robustness(t, adjusted, alpha) -> dict:
    """Under how many wordings alone the group is below the rest (Holm-adjusted p < alpha)."""
    names = t["wordings"]
    if not names:
        return {}
    err, overall = t["error"][1:], t["error_overall"][1:]
    held = [w for w, a, e, o in zip(names, adjusted, err, overall) if a < alpha and e > o]
    return {"wordings_holding": stats.wordings_holding(adjusted, err, overall, cutoff=alpha),
            "wordings": len(names), "wordings_held": held,
            "per_wording": {w: float(1 - e) for w, e in zip(names, err)},
            "per_wording_overall": {w: float(1 - o) for w, o in zip(names, overall)},
            "per_wording_rest": {w: float(1 - e) for w, e in zip(names, t["error_rest"][1:])}}


def _finding(t, adjusted, m, cfg, robust) -> dict:
    r, top = t["row"], f"top-{t['k']}"
    gap = "" if t["gap_to_mean"] is None else f", {100 * t['gap_to_mean']:+.1f} points from the mean over groups"
    message = (f"{t['task']}: {t['group_by']} {r['group']} is below the rest: {top} accuracy "
               f"{r['value']:.1%} ({1 - cfg.alpha:.0%} CI {r['ci_low']:.1%}–{r['ci_high']:.1%}) vs "
               f"{t['overall']:.1%} over all images{gap} (Fisher exact p={t['p'][0]:.2g}, "
               f"Holm-adjusted {adjusted:.2g} over {m} groups tested).")
    evidence = {"metric": r["metric"], "task": t["task"], "group_by": t["group_by"], "group": r["group"],
                "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": r["n"],
                "overall": t["overall"], "gap_to_mean": t["gap_to_mean"], "p_value": float(t["p"][0]),
                "p_adjusted": adjusted, "tests": m, "correction": "holm", **robust}
    severity = "high" if t["overall"] - r["value"] >= 0.10 else "medium"
    return with_robustness({"severity": severity, "message": message, "evidence": evidence}, robust)
