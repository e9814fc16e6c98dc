"""Distribution shift: accuracy under synthetic corruptions and under natural shifts.

Synthetic (ImageNet-C style, audit/corruptions.py): every classification task (FairFace race and
gender, every classify:* source) is re-scored on corrupted copies of a seeded, group-stratified
subsample. ImageNet-C's corruption error is normalised by AlexNet's errors (the paper's
constants, label_sets/imagenet/alexnet_errors.yaml) when the task is ImageNet's
(audit.imagenet.is_imagenet: every label an ImageNet-1k wnid, or every label one of its 1000
class names; a subset of its classes counts):

    CE_c = sum_s E_s,c(f) / sum_s E_s,c(AlexNet)      (ce_baseline "alexnet")

over the severities run. Any other task has no AlexNet baseline, so its CE is relative to the
model's own clean error:

    CE_c = sum_s E_s,c / (S * E_clean)        (ce_baseline "self"; S severities; 1 = no worse than clean)

and mCE is their mean over corruptions; every CE and mCE row says which (`ce_baseline`). CE
"self" is undefined (null) when the clean error is 0. AlexNet's errors are 1000-way: on a
subset of ImageNet's classes CE "alexnet" comes out lower than the literature's.
On FairFace tasks the per-image accuracy drop (clean minus corrupted, averaged over severities)
is reported by race and by gender, and a finding asks whether corruptions hurt one group more
than the other images (one-sided Welch t-test, Bonferroni over every group tested). Only groups
of another attribute are tested (gender accuracy by race, race accuracy by gender, as in Gender
Shades): grouped by its own label, a task's accuracy drop is per-class recall, which moves
whenever corrupted images drift towards any one class, in a world with no group effect too.

Harm under shift (issue 17.3): on the FairFace source, the harm rates of fairface_label_bias
(non-human, crime: the categories of Config.harm_label_set, its headline ensemble of the panel
wordings, audit.harm) on the same subsample, clean and under every corruption and severity, by
race, gender and age band, with bootstrap CIs. Per image and corruption its rise is the mean
harm indicator over severities minus its clean one (paired: the same images); a group whose
rise exceeds the other images' (one-sided Welch t-test, Bonferroni over groups x rates x
corruptions) is a finding, re-tested under each panel wording alone: under fewer than 2/3 of
them it is "wording-dependent" (low), fairface_label_bias's rule (audit.findings.with_robustness).

Natural (Taori et al. 2020): every shift:* source is a shifted split of the classify task whose
labels contain its labels. Reported: accuracy per split, relative robustness (shifted minus
clean accuracy: negative is a drop, positive any gain under shift) and, given a baseline table,
effective robustness: shifted accuracy above the logit-linear fit of (clean -> shifted
accuracy) over the baseline models.

Baseline table (Config.baseline_table), a CSV with one row per (model, split):
    model,split,accuracy_id,accuracy_shift
    resnet50,sketch,0.76,0.24
`split` matches the shift source's name after "shift:"; accuracies are fractions in (0, 1), or
percent: a column holding any value over 1 is read as percent throughout. At least two models per split are needed for the fit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from audit import groups as crossings
from audit import harm, stats, zeroshot
from audit.corruptions import SEVERITIES, Corruption, alexnet_errors, list_corruptions
from audit.imagenet import is_imagenet
from audit.errors import UserError
from audit.findings import with_robustness
from audit.labels import HARM_RATES, short_name
from audit.registry import Metric, register_probe
from audit.results import ProbeResult, config_dict, row
from audit.settings import setting
from audit.tasks import label_set_weights

log = logging.getLogger(__name__)
# fairface_label_bias's two harm rates (audit.labels.HARM_RATES), by the groups it reports
HARM = {m: HARM_RATES[m] for m in ("non_human_rate", "crime_rate")}
HARM_GROUPS = ("race", "gender", "age_band")
DEFAULT_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "motion_blur",
                       "fog", "brightness", "contrast", "pixelate", "jpeg_compression")
_EPS = 1e-4  # logit clipping: accuracies of exactly 0 or 1 stay finite


# -- pure metric math ------------------------------------------------------------------------

def stratified_subsample(groups, n: int, *, seed: int) -> np.ndarray:
    """Sorted indices of about n items, each group's share kept (largest remainders), drawn
    without replacement with a seeded generator. All items when n >= len(groups)."""
    groups = np.asarray(groups).astype(str)
    if n >= len(groups):
        return np.arange(len(groups))
    names, codes = np.unique(groups, return_inverse=True)
    sizes = np.bincount(codes)
    quota = sizes * n / len(groups)
    take = np.floor(quota).astype(int)
    extra = np.argsort(-(quota - take), kind="stable")[: n - take.sum()]
    take[extra] += 1
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(codes == g), size=k, replace=False) for g, k in enumerate(take)]
    return np.sort(np.concatenate(picks))


def corruption_error(clean_acc: float, severity_acc) -> float | None:
    """CE relative to the model's own clean error: sum_s E_s / (S * E_clean); None if E_clean = 0."""
    clean_err = 1.0 - float(clean_acc)
    errs = 1.0 - np.asarray(severity_acc, dtype=float)
    if clean_err <= 0:
        return None
    return float(errs.sum() / (len(errs) * clean_err))


def alexnet_corruption_error(severity_acc, alexnet_err) -> float:
    """ImageNet-C's CE: the model's errors summed over severities / AlexNet's at the same ones."""
    return float((1.0 - np.asarray(severity_acc, dtype=float)).sum() / np.sum(alexnet_err))


def alexnet_baseline(corruption: str, severities) -> list[float]:
    """AlexNet's ImageNet-C error of `corruption` at each of `severities` (1..5)."""
    errs = alexnet_errors()[corruption]["severities"]
    return [errs[s - 1] for s in severities]


def corruption_names(names) -> tuple:
    """The config's corruption list; ("all",) is every one of audit.corruptions (ImageNet-C's 15)."""
    names = tuple(names)
    return tuple(list_corruptions()) if names == ("all",) else names


def _logit(p):
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def logit_fit(acc_id, acc_shift) -> tuple[float, float]:
    """Least-squares line logit(shift) = a * logit(id) + b over baseline models: (a, b)."""
    a, b = np.polyfit(_logit(acc_id), _logit(acc_shift), 1)
    return float(a), float(b)


def effective_robustness(acc_id, acc_shift, fit: tuple[float, float]):
    """Shifted accuracy minus what the baseline fit predicts from the clean accuracy."""
    a, b = fit
    predicted = 1.0 / (1.0 + np.exp(-(a * _logit(acc_id) + b)))
    return np.asarray(acc_shift, dtype=float) - predicted


def read_baseline_table(path) -> "object":
    import pandas as pd
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the baseline table ({e.__class__.__name__})") from None
    need = {"model", "split", "accuracy_id", "accuracy_shift"}
    if not need <= set(table.columns):
        raise UserError(f"{path}: baseline table needs columns {', '.join(sorted(need))}")
    for col in ("accuracy_id", "accuracy_shift"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
        if table[col].isna().any():
            raise UserError(f"{path}: column {col} has a value that is not a number")
        if (table[col] > 1).any():     # the whole column is in percent
            table[col] = table[col] / 100.0
    table["split"] = table["split"].astype(str)
    return table


def _binomial_accuracy(correct, n_boot, rng) -> np.ndarray:
    """Bootstrap accuracies of a 0/1 vector: resampling n items puts Binomial(n, acc) on the count."""
    correct = np.asarray(correct, dtype=bool)
    return rng.binomial(len(correct), correct.mean(), size=n_boot) / len(correct)


def _ci(samples, alpha):
    from audit.stats import percentile_ci
    lo, hi = percentile_ci(np.asarray(samples, dtype=float), alpha=alpha)
    return _f(lo), _f(hi)


def _f(x):
    return None if x is None or not np.isfinite(x) else float(x)


# -- the probe -------------------------------------------------------------------------------

@register_probe
class DistributionShift:
    name = "distribution_shift"
    title = "Distribution shift"
    metrics = {
        "accuracy": Metric("Accuracy", "fraction", worse="down"),
        "corruption_error": Metric("Corruption error", "ratio", worse="up",
                                   description="errors summed over severities / AlexNet's "
                                               "(ce_baseline alexnet: ImageNet tasks) or / S x the "
                                               "model's clean error (ce_baseline self)"),
        "mce": Metric("Mean corruption error", "ratio", worse="up",
                      description="mean CE over the corruptions run, with the CE rows' ce_baseline"),
        "accuracy_drop": Metric("Accuracy drop under corruption", "points", worse="up"),
        **{m: Metric(f"{t} labels under corruption", "fraction", worse="up",
                     description=f"share of faces put in a {t.lower()} class of harm_label_set, "
                                 "clean and per corruption and severity")
           for m, t in (("non_human_rate", "Non-human"), ("crime_rate", "Crime-related"))},
        **{f"{m}_excess_rise": Metric(f"{t} labels: group's rise beyond the others'", "points",
                                      worse="up",
                                      description="the group's rise under a corruption (mean "
                                                  "over severities minus clean, per image) minus "
                                                  "the other images' rise")
           for m, t in (("non_human_rate", "Non-human"), ("crime_rate", "Crime-related"))},
        "relative_robustness": Metric("Accuracy change on the shifted split", "points",
                                      worse="down"),
        "effective_robustness": Metric("Effective robustness", "points", worse="down"),
    }
    row_keys = ("task", "corruption", "severity", "split", "template_set", "ce_baseline")
    # Per task its clean accuracy and mCE, per split its accuracy and change; each corruption's
    # cells (10 x 5 per task) are the breakdown behind those, not headlines of a run.
    headline = ({"corruption": ["clean", None]},)
    requires = ()

    @dataclass(frozen=True)
    class Config:
        # Images per source that get corrupted copies. Every corrupted copy is a full image
        # encode: 10 corruptions x 5 severities x 200 = 10,000 encodes per source (about a
        # minute on 2 CPU cores for the demo model; far more for a ViT-B). 200 leaves ~14 faces
        # per FairFace race x gender cell: those crossings get rows but no CI and no test.
        # Raise it with --set distribution_shift.subsample=1000 for a release audit.
        subsample: int = setting(200, min=1)
        # audit/corruptions.py names; "all" is ImageNet-C's 15 (mCE as published: --set
        # distribution_shift.corruptions=all). The default is the 10 of earlier releases, which
        # keeps the demo under a minute (5 more cost 2,000 encodes per source at subsample 200).
        corruptions: tuple = DEFAULT_CORRUPTIONS
        severities: tuple = SEVERITIES
        templates: str = "openai"              # class weights: open_clip's 80-template ensemble
        baseline_table: str | None = None      # CSV model,split,accuracy_id,accuracy_shift (module doc)
        n_boot: int = setting(1000, min=1)                     # bootstrap resamples of images
        alpha: float = setting(0.05, above=0, below=1)
        min_n: int = setting(20, min=1)                        # a group below this gets no CI ("too few images")
        # Harm under shift on FairFace: fairface_label_bias's first label set; "" turns it off.
        harm_label_set: str = "fairface_default"

    def run(self, ctx, cfg: Config) -> ProbeResult:
        from audit.tasks import classification_tasks
        cfg = replace(cfg, corruptions=corruption_names(cfg.corruptions))
        _check_config(ctx, cfg)
        tasks = classification_tasks(ctx, attributes=("race", "gender"))
        if not tasks:
            return ProbeResult.skipped("no classification task: needs --fairface or --classify", config=cfg)
        weights = {t.name: self._weights(ctx, t, cfg) for t in tasks}
        rows, summary, findings = [], {}, []
        for source_tasks in _by_source(tasks):
            r, s, f = self._synthetic(ctx, source_tasks, weights, cfg)
            rows, findings = rows + r, findings + f
            summary.update(s)
        r, s = self._natural(ctx, [t for t in tasks if t.name.startswith("classify:")], weights, cfg)
        summary.update(s)
        return ProbeResult(status="ok", summary=summary, rows=rows + r, findings=findings, config=config_dict(cfg))

    def _weights(self, ctx, task, cfg) -> np.ndarray:
        from audit.zeroshot import classifier

        from audit.tasks import template_sets
        sets = template_sets()
        templates = [t for t, s in sets.items() if cfg.templates in s.split(",")]
        if not templates:
            raise UserError(f"distribution_shift: template set {cfg.templates!r} is not 'openai' or 'simple'")
        return classifier(ctx, task.texts, templates)

    # -- synthetic corruptions -----------------------------------------------------------------
    def _synthetic(self, ctx, tasks, weights, cfg):
        source = tasks[0].source
        strata = _strata(source, tasks)
        idx = stratified_subsample(strata, cfg.subsample, seed=ctx.seed)
        sub = source.subset(idx).keep_decoded()  # read 50 times over: decode each image once
        clean = ctx.images(sub)
        corrupted = {(c, s): ctx.images(sub, transform=Corruption(c, s, seed=ctx.seed))
                     for c in cfg.corruptions for s in cfg.severities}
        rows, summary, tests = [], {}, []
        for task in tasks:
            truth = task.truth[idx]
            ok_clean = (clean @ weights[task.name].T).argmax(1) == truth
            ok = {k: (e @ weights[task.name].T).argmax(1) == truth for k, e in corrupted.items()}
            r, s = self._corruption_rows(task, ok_clean, ok, cfg, ctx.seed)
            rows += r
            summary.update(s)
            if task.name.startswith("fairface:"):
                r, t = self._drop_rows(task.name, sub.table, ok_clean, ok, cfg, ctx.seed)
                rows, tests = rows + r, tests + t
        findings = _drop_findings(tests, cfg.alpha)
        if tasks[0].name.startswith("fairface:") and cfg.harm_label_set:
            r, s, f = self._harm(ctx, sub.table, clean, corrupted, cfg)
            rows, findings = rows + r, findings + f
            summary.update(s)
        return rows, summary, findings

    def _corruption_rows(self, task, ok_clean, ok, cfg, seed):
        from audit.stats import bootstrap_rate
        rows, base = [], "alexnet" if is_imagenet(task.labels) else "self"
        task = task.name
        for (c, s), correct in [(("clean", 0), ok_clean), *ok.items()]:
            v, lo, hi = bootstrap_rate(correct, n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha)
            rows.append(row("accuracy", v, template_set=cfg.templates, ci_low=lo, ci_high=hi,
                            n=len(correct), task=task, corruption=c, severity=s))
        ce, ce_boot = self._ce(ok_clean, ok, cfg, seed, base)
        for c in cfg.corruptions:
            lo, hi = _ci(ce_boot[c], cfg.alpha)
            rows.append(row("corruption_error", ce[c], template_set=cfg.templates, ci_low=lo,
                            ci_high=hi, n=len(ok_clean), task=task, corruption=c, ce_baseline=base))
        valid = [v for v in ce.values() if v is not None]
        mce = float(np.mean(valid)) if len(valid) == len(ce) else None
        lo, hi = _ci(np.mean(np.stack(list(ce_boot.values())), axis=0), cfg.alpha)
        rows.append(row("mce", mce, template_set=cfg.templates, ci_low=lo if mce is not None else None,
                        ci_high=hi if mce is not None else None, n=len(ok_clean), task=task,
                        ce_baseline=base, n_corruptions=len(ce)))   # ImageNet-C's mCE: all 15
        worst = max(((c, v) for c, v in ce.items() if v is not None), key=lambda kv: kv[1], default=None)
        summary = {f"{task}: clean accuracy": float(ok_clean.mean()), f"{task}: mce": mce,
                   f"{task}: ce_baseline": base,
                   # mCE compares with the literature only over ImageNet-C's 15 (each CE_c does alone)
                   f"{task}: mce over": f"{len(ce)} of ImageNet-C's {len(list_corruptions())} corruptions"
                                        + ("" if len(ce) == len(list_corruptions()) else
                                           " (--set distribution_shift.corruptions=all for all)")}
        if worst:
            summary[f"{task}: worst corruption"] = f"{worst[0]} (CE {worst[1]:.2f})"
        return rows, summary

    def _ce(self, ok_clean, ok, cfg, seed, base):
        """CE per corruption and its bootstrap: one multinomial resample of the images, shared
        by every corruption so mCE's interval keeps their correlation. AlexNet's errors are
        published constants: only the model's side is resampled."""
        n = len(ok_clean)
        rng = np.random.default_rng([seed, 7])
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=max(cfg.n_boot, 1)) / n   # (B, n)
        clean_err = w @ (~ok_clean)
        ce, boot = {}, {}
        for c in cfg.corruptions:
            errs = np.stack([~ok[(c, s)] for s in cfg.severities], axis=1)        # (n, S)
            acc = [ok[(c, s)].mean() for s in cfg.severities]
            if base == "alexnet":
                alex = alexnet_baseline(c, cfg.severities)
                ce[c], boot[c] = alexnet_corruption_error(acc, alex), (w @ errs).sum(axis=1) / sum(alex)
                continue
            ce[c] = corruption_error(ok_clean.mean(), acc)
            with np.errstate(divide="ignore", invalid="ignore"):
                boot[c] = (w @ errs).sum(axis=1) / (len(cfg.severities) * clean_err)
        return ce, boot

    def _drop_rows(self, task, table, ok_clean, ok, cfg, seed):
        """Per image: clean correctness minus mean corrupted correctness over severities, per
        corruption and averaged over all ("all"); its mean by race, by gender and by their
        crossings (audit.groups: race x gender, age band x gender) with CIs. Also the group-vs-rest
        tests of the "all" drop, for the groups that do not hold the task's own attribute."""
        from audit.stats import bootstrap_rate
        per_c = {c: ok_clean - np.mean([ok[(c, s)] for s in cfg.severities], axis=0) for c in cfg.corruptions}
        per_c["all"] = np.mean(list(per_c.values()), axis=0)
        rows, tests = [], []
        table, crossed = crossings.with_crossings(table)
        for attr in ("race", "gender", *crossed):
            groups = table[attr].astype(str).to_numpy()
            for c, drop in per_c.items():
                for g in sorted(set(groups)):
                    d = drop[groups == g]
                    big = len(d) >= cfg.min_n
                    v, lo, hi = bootstrap_rate(d, n_boot=cfg.n_boot if big else 0, seed=seed, alpha=cfg.alpha)
                    extra = {} if big else {"note": "too few images"}
                    rows.append(row("accuracy_drop", v, template_set=cfg.templates, group_by=attr, group=g,
                                    ci_low=lo, ci_high=hi, n=len(d), task=task, corruption=c,
                                    **crossings.parts(attr, g), **extra))
                    # A group holding the task's own class (race x gender for the race task)
                    # measures that class's recall: reported, never tested.
                    own = task.removeprefix("fairface:") in crossings.components(attr)
                    if c == "all" and big and not own:
                        tests.append(_drop_test(task, attr, g, d, drop[groups != g], rows[-1]))
        return rows, tests

    # -- harm under shift ------------------------------------------------------------------------
    def _harm(self, ctx, table, clean, corrupted, cfg):
        """fairface_label_bias's harm rates on the corrupted copies the accuracy rows use: only
        the label set's text weights are new (one text encode)."""
        label_set = ctx.label_set(cfg.harm_label_set)
        head, per_wording = label_set_weights(ctx, label_set)
        hits = _Hits(label_set["classes"], clean, corrupted)
        table, _ = crossings.with_crossings(table)
        keys = dict(label_set=short_name(label_set["name"]), template_set=label_set.get("panel"))
        at = hits.under(head)
        rows = _harm_rate_rows(at, table, keys, cfg, ctx.seed)
        r, tests = _rise_rows(at, table, keys, cfg, ctx.seed)
        cutoff = cfg.alpha / max(len(tests), 1)
        findings = [_rise_finding(t, cutoff, len(tests), _rise_robustness(t, hits, per_wording, table, cutoff, cfg))
                    for t in tests if t["p"] < cutoff]
        return rows + r, _harm_summary(r, keys["label_set"]), findings

    # -- natural shift ---------------------------------------------------------------------------
    def _natural(self, ctx, tasks, weights, cfg):
        rows, summary, seen = [], {}, set()
        baseline = read_baseline_table(cfg.baseline_table) if cfg.baseline_table else None
        for shift in ctx.sources_of("shift"):
            task = _home_task(shift, tasks)
            split = shift.name.split(":", 1)[1]
            if task is None:
                log.warning("%s: no classify source holds its labels; skipped", shift.name)
                summary[f"{split}: skipped"] = "no classify source holds its labels"
                continue
            if task.name not in seen:     # the in-distribution reference, once per task
                seen.add(task.name)
                rows.append(self._clean_row(ctx, task, weights[task.name], cfg))
            rows += self._split_rows(ctx, shift, task, weights[task.name], split, baseline, cfg)
            acc = {r["metric"]: r["value"] for r in rows if r.get("split") == split}
            summary[f"{split}: accuracy"] = acc["accuracy"]
            summary[f"{split}: relative_robustness"] = acc["relative_robustness"]
            if "effective_robustness" in acc:
                summary[f"{split}: effective_robustness"] = acc["effective_robustness"]
        return rows, summary

    def _clean_row(self, ctx, task, w, cfg) -> dict:
        from audit.stats import bootstrap_rate
        ok = (ctx.images(task.source) @ w.T).argmax(1) == task.truth
        v, lo, hi = bootstrap_rate(ok, n_boot=cfg.n_boot, seed=ctx.seed, alpha=cfg.alpha)
        return row("accuracy", v, template_set=cfg.templates, ci_low=lo, ci_high=hi, n=len(ok),
                   task=task.name, split="clean")

    def _split_rows(self, ctx, shift, task, w, split, baseline, cfg) -> list[dict]:
        labels = {l: i for i, l in enumerate(task.labels)}
        truth = np.array([labels[l] for l in shift.table["label"].astype(str)])
        ok_shift = (ctx.images(shift) @ w.T).argmax(1) == truth
        ok_clean = (ctx.images(task.source) @ w.T).argmax(1) == task.truth
        rng = np.random.default_rng([ctx.seed, 11])
        b_shift = _binomial_accuracy(ok_shift, cfg.n_boot, rng)
        b_clean = _binomial_accuracy(ok_clean, cfg.n_boot, rng)
        keys = dict(template_set=cfg.templates, task=task.name, split=split, n=len(ok_shift))
        acc_s, acc_c = float(ok_shift.mean()), float(ok_clean.mean())
        lo, hi = _ci(b_shift, cfg.alpha)
        out = [row("accuracy", acc_s, ci_low=lo, ci_high=hi, **keys)]
        lo, hi = _ci(b_shift - b_clean, cfg.alpha)
        out.append(row("relative_robustness", acc_s - acc_c, ci_low=lo, ci_high=hi, clean_accuracy=acc_c, **keys))
        fit = _baseline_fit(baseline, split, cfg.baseline_table)
        if fit is not None:
            er = float(effective_robustness(acc_c, acc_s, fit))
            lo, hi = _ci(effective_robustness(b_clean, b_shift, fit), cfg.alpha)
            out.append(row("effective_robustness", er, ci_low=lo, ci_high=hi,
                           fit_slope=fit[0], fit_intercept=fit[1], **keys))
        return out


def _check_config(ctx, cfg) -> None:
    """A bad corruption name, severity or harm label set is a UserError before any encode, not
    after minutes of corrupted copies."""
    for c in cfg.corruptions:
        for s in cfg.severities:
            Corruption(c, s)
    if cfg.harm_label_set and "fairface" in ctx.sources:
        ctx.label_set(cfg.harm_label_set)


def _by_source(tasks) -> list[list]:
    """Tasks grouped by their source, so FairFace race and gender share one set of encodes."""
    groups: dict[str, list] = {}
    for t in tasks:
        groups.setdefault(t.source.name, []).append(t)
    return list(groups.values())


def _strata(source, tasks) -> np.ndarray:
    """FairFace: race x gender cells; a classify source: its label."""
    if tasks[0].name.startswith("fairface:"):
        return (source.table["race"].astype(str) + "|" + source.table["gender"].astype(str)).to_numpy()
    return source.table["label"].astype(str).to_numpy()


def _home_task(shift, tasks):
    """The classify task whose labels contain every label of the shifted split."""
    wanted = set(shift.table["label"].astype(str))
    return next((t for t in tasks if wanted <= set(t.labels)), None)


def _baseline_fit(baseline, split, path):
    if baseline is None:
        return None
    part = baseline[baseline["split"] == split]
    if len(part) < 2:
        log.warning("%s: fewer than two baseline models for split %r; no effective robustness", path, split)
        return None
    return logit_fit(part["accuracy_id"], part["accuracy_shift"])


def _greater_p(a, b) -> float:
    """One-sided Welch t-test that mean(a) > mean(b); 1 where it is undefined (no variance)."""
    import warnings

    from scipy.stats import ttest_ind
    if len(a) < 2 or len(b) < 2:
        return 1.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # identical values: p is nan, read as 1
        p = float(ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    return p if np.isfinite(p) else 1.0


def _drop_test(task, attr, group, drop, rest, r) -> dict:
    """One-sided Welch t-test: do this group's images lose more accuracy than the others'?"""
    return {"task": task, "group_by": attr, "group": group, "p": _greater_p(drop, rest),
            "drop": [r["value"], r["ci_low"], r["ci_high"]], "drop_rest": float(np.mean(rest))}


def _drop_findings(tests, alpha) -> list[dict]:
    """A finding per group whose drop exceeds the other images' beyond a Bonferroni cut over
    every group tested (the family-wise false-finding rate stays at alpha)."""
    cut = alpha / max(len(tests), 1)
    return [{"severity": "medium",
             "message": f"{t['task']}: corruptions cost {t['group_by']}={t['group']} {t['drop'][0]:.1%} "
                        f"accuracy on average vs {t['drop_rest']:.1%} for the other images "
                        f"(Welch t-test p={t['p']:.1g} < {cut:.1g}, Bonferroni over {len(tests)} groups).",
             "evidence": {**t, "p_cutoff": cut}}
            for t in tests if t["p"] < cut]


# -- harm under shift ----------------------------------------------------------------------------

class _Hits:
    """Harm indicators of the clean and corrupted embeddings under any class weights."""

    def __init__(self, classes, clean, corrupted):
        self.classes, self.emb = classes, {("clean", 0): clean, **corrupted}

    def under(self, weights) -> dict:
        """{(corruption, severity): {rate: bool per image}}; ("clean", 0) is the clean copy."""
        return {k: harm.indicators(zeroshot.predict(e, weights), self.classes, rates=HARM)
                for k, e in self.emb.items()}


def _harm_groups(table):
    for attr in HARM_GROUPS:
        if attr in table:
            yield attr, table[attr].astype(str).to_numpy()


def _harm_rate_rows(at, table, keys, cfg, seed) -> list[dict]:
    """Each rate overall and by group, clean and under each corruption and severity, with CIs."""
    rows = []
    for (c, s), ind in at.items():
        for metric, x in ind.items():
            where = dict(corruption=c, severity=s, **keys)
            v, lo, hi = stats.bootstrap_rate(x, n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha)
            rows.append(row(metric, v, ci_low=lo, ci_high=hi, n=int(x.size), **where))
            for attr, labels in _harm_groups(table):
                found = stats.rates_by_group(x, labels, n_boot=cfg.n_boot, seed=seed, alpha=cfg.alpha,
                                             min_n=cfg.min_n)
                rows += [row(metric, r["value"], group_by=attr, group=r["group"], ci_low=r["ci_low"],
                             ci_high=r["ci_high"], n=r["n"], **where, **({"note": r["note"]} if "note" in r else {}))
                         for r in found if "disparity" not in r]
    return rows


def _rises(at, metric, corruption, severities) -> np.ndarray:
    """Per image: the mean indicator over severities minus the clean indicator."""
    corrupted = np.mean([at[(corruption, s)][metric] for s in severities], axis=0)
    return corrupted - at[("clean", 0)][metric]


def _rise_rows(at, table, keys, cfg, seed):
    """Per rate, corruption and group: the group's rise minus the other images' (stratified
    bootstrap CI), and the one-sided test of it for groups of min_n images or more."""
    corruptions = sorted({c for c, _ in at if c != "clean"}, key=list(cfg.corruptions).index)
    rows, tests = [], []
    for metric in HARM:
        for c in corruptions:
            rise = _rises(at, metric, c, cfg.severities)
            for attr, labels in _harm_groups(table):
                for g in sorted(set(labels)) if len(set(labels)) > 1 else ():   # a group with others
                    mine, rest = rise[labels == g], rise[labels != g]
                    big = len(mine) >= cfg.min_n
                    v, lo, hi = stats.bootstrap_diff_of_means(mine, rest, n_boot=cfg.n_boot if big else 0,
                                                              seed=seed, alpha=cfg.alpha)
                    rows.append(row(f"{metric}_excess_rise", v, group_by=attr, group=g, ci_low=lo, ci_high=hi,
                                    n=len(mine), corruption=c, rise=float(mine.mean()),
                                    rise_rest=float(rest.mean()), **keys,
                                    **({} if big else {"note": stats.TOO_FEW})))
                    if big:
                        tests.append({"metric": metric, "corruption": c, "group_by": attr, "group": g,
                                      "p": _greater_p(mine, rest), "row": rows[-1]})
    return rows, tests


def _rise_robustness(test, hits, per_wording, table, cutoff, cfg) -> dict:
    """Under how many panel wordings alone the group's excess rise holds (same test, cutoff and
    direction): fairface_label_bias's robust-finding rule."""
    if not per_wording:
        return {}
    labels = table[test["group_by"]].astype(str).to_numpy() == test["group"]
    held, per = [], {}
    for wording, w in per_wording.items():
        rise = _rises(hits.under(w), test["metric"], test["corruption"], cfg.severities)
        per[wording] = float(rise[labels].mean() - rise[~labels].mean())
        if per[wording] > 0 and _greater_p(rise[labels], rise[~labels]) < cutoff:
            held.append(wording)
    return {"wordings_holding": len(held), "wordings": len(per_wording), "wordings_held": held,
            "per_wording_excess_rise": per}


def _rise_finding(test, cutoff, n_tests, robust) -> dict:
    """The finding, with fairface_label_bias's wording rule (audit.findings.with_robustness)."""
    r = test["row"]
    words = HARM[test["metric"]][1]
    message = (f"{test['corruption']} raises how often {test['group_by']}={test['group']} faces are "
               f"classified {words} by {100 * r['rise']:+.1f} points (mean over severities) vs "
               f"{100 * r['rise_rest']:+.1f} for the other faces (Welch t-test p={test['p']:.1g} < "
               f"{cutoff:.1g}, Bonferroni over {n_tests} groups x rates x corruptions).")
    evidence = {k: test[k] for k in ("metric", "corruption", "group_by", "group", "p")}
    evidence.update(excess_rise=r["value"], ci_low=r["ci_low"], ci_high=r["ci_high"], rise=r["rise"],
                    rise_rest=r["rise_rest"], n=r["n"], p_cutoff=cutoff)
    return with_robustness({"severity": "medium", "message": message, "evidence": evidence}, robust)


def _harm_summary(rise_rows, label_set) -> dict:
    """Per rate, the group whose rise beyond the others', averaged over corruptions, is largest
    (the report draws its rates by severity): named by group_by and group."""
    out = {}
    for metric in HARM:
        by_group: dict[tuple, list] = {}
        for r in rise_rows:
            if r["metric"] == f"{metric}_excess_rise" and "note" not in r:
                by_group.setdefault((r["group_by"], r["group"]), []).append(r["value"])
        if by_group:
            (attr, g), v = max(((k, float(np.mean(v))) for k, v in by_group.items()), key=lambda kv: kv[1])
            out.update({f"harm_worst_{metric}_group_by": attr, f"harm_worst_{metric}_group": g,
                        f"harm_worst_{metric}_excess_rise": v, "harm_label_set": label_set})
    return out
