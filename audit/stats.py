"""Rates with bootstrap confidence intervals, group disparities, and ranking skew.

Every bootstrap here resamples whole images with replacement, like fairlearn's MetricFrame
does, but draws the resampled *cell counts* from a multinomial instead of materialising each
resample: a rate only depends on how many resampled images fall in each (group, value) cell,
and resampling n images with replacement puts a Multinomial(n, cell shares) on those counts.
That is the same distribution, drawn in one vectorised call (fairlearn's own loop costs ~85 ms
per resample at n=10k, i.e. minutes for 1000 resamples over a few attributes).

By-group rates and disparities follow fairlearn's MetricFrame definitions (`by_group`,
`difference()`, `ratio()` between groups), computed here with bincount: MetricFrame costs about
0.25 s per call at n=10k even without bootstrap (its metric wrapper stacks rows in Python), and
a FairFace run needs dozens. The tests recompute every value and interval with MetricFrame.
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

TOO_FEW = "too few images"
# Keep one multinomial draw block under this many cells (memory of n_boot x cells ints).
_MAX_BLOCK = 2_000_000


def _rng(seed):
    return np.random.default_rng(seed)


def percentile_ci(samples: np.ndarray, *, alpha: float = 0.05, axis: int = 0):
    """Percentile interval of bootstrap samples, ignoring NaN (a resample without the group)."""
    samples = np.asarray(samples, dtype=float)
    with _quiet_nan():
        lo, hi = np.nanquantile(samples, [alpha / 2, 1 - alpha / 2], axis=axis)
    return lo, hi


@contextlib.contextmanager
def _quiet_nan():
    """nan* reductions warn on an all-NaN slice; here that is a legitimate "no CI"."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _as_float(x) -> float | None:
    """JSON-safe float: NaN/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _multinomial_counts(counts: np.ndarray, n_boot: int, rng) -> np.ndarray:
    """(n_boot, cells) resampled counts: resampling sum(counts) items with replacement."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    p = counts / n
    block = max(1, _MAX_BLOCK // max(1, len(counts)))
    parts = [rng.multinomial(n, p, size=min(block, n_boot - i)) for i in range(0, n_boot, block)]
    return np.concatenate(parts, axis=0)


def _bootstrap_means(x: np.ndarray, n_boot: int, rng) -> np.ndarray:
    """Bootstrap distribution of mean(x): resample the distinct values' counts."""
    values, counts = np.unique(np.asarray(x, dtype=float), return_counts=True)
    draws = _multinomial_counts(counts, n_boot, rng)
    return draws @ values / counts.sum()


def bootstrap_rate(indicator: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                   alpha: float = 0.05):
    """Mean of `indicator` with a percentile bootstrap CI: (value, lo, hi).

    Empty input gives (None, None, None); n_boot=0 gives no CI.
    """
    x = np.asarray(indicator, dtype=float).ravel()
    if x.size == 0:
        return None, None, None
    value = float(x.mean())
    if n_boot <= 0:
        return value, None, None
    lo, hi = percentile_ci(_bootstrap_means(x, n_boot, _rng(seed)), alpha=alpha)
    return value, _as_float(lo), _as_float(hi)


def paired_bootstrap_diff(a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05):
    """mean(a) - mean(b) for paired measurements on the same items, with a bootstrap CI.

    Items are resampled as pairs, so the CI accounts for the correlation between a and b
    (mean(a) - mean(b) = mean(a - b), so resampling the differences is the same thing).
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.size} vs {b.size}")
    return bootstrap_rate(a - b, n_boot=n_boot, seed=seed, alpha=alpha)


def bootstrap_diff_of_means(a: np.ndarray, b: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                            alpha: float = 0.05):
    """mean(a) - mean(b) for two independent samples, each resampled on its own (a stratified
    bootstrap), with a percentile CI."""
    a, b = (np.asarray(x, dtype=float).ravel() for x in (a, b))
    value = float(a.mean() - b.mean())
    if n_boot <= 0:
        return value, None, None
    rng = _rng(seed)
    lo, hi = percentile_ci(_bootstrap_means(a, n_boot, rng) - _bootstrap_means(b, n_boot, rng), alpha=alpha)
    return value, float(lo), float(hi)


def _binary(indicator) -> np.ndarray:
    x = np.asarray(indicator)
    if x.dtype != bool and not np.isin(x, (0, 1)).all():
        raise ValueError("rates_by_group needs a 0/1 indicator")
    return x.astype(bool).ravel()


def _group_boot(x: np.ndarray, codes: np.ndarray, n_groups: int, n_boot: int, rng):
    """Bootstrap rates per group, (n_boot, G), NaN where a resample has no image of a group."""
    pos = np.bincount(codes[x], minlength=n_groups)
    neg = np.bincount(codes[~x], minlength=n_groups)
    draws = _multinomial_counts(np.concatenate([pos, neg]), n_boot, rng)
    bpos, bneg = draws[:, :n_groups], draws[:, n_groups:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return bpos / (bpos + bneg)


def rates_by_group(indicator: np.ndarray, groups: Sequence, *, n_boot: int = 1000,
                   seed: int = 0, alpha: float = 0.05, min_n: int = 20) -> list[dict]:
    """Rate of `indicator` per group with bootstrap CIs, plus two disparity rows.

    Returns one row per group, sorted by group name: `{group, value, ci_low, ci_high, n}`
    (a group with n < min_n keeps its value but gets null CI and `note: "too few images"`),
    then `{group: "max/min", disparity: "ratio"|"difference", value, ci_low, ci_high, n,
    max_group, min_group}`: the highest group rate divided by (ratio, 1 = parity) and minus
    (difference) the lowest, over the groups with at least min_n images only, so a group of
    three images cannot make the headline disparity.
    """
    x = _binary(indicator)
    g = np.asarray(groups).astype(str).ravel()
    if g.size != x.size:
        raise ValueError(f"indicator and groups differ in length: {x.size} vs {g.size}")
    if x.size == 0:
        return []
    names, codes = np.unique(g, return_inverse=True)
    boot = _group_boot(x, codes, len(names), max(n_boot, 1), _rng(seed))
    lo, hi = percentile_ci(boot, alpha=alpha)
    sizes = np.bincount(codes, minlength=len(names))
    values = np.bincount(codes, weights=x, minlength=len(names)) / sizes
    rows = [_group_row(name, values[i], lo[i], hi[i], sizes[i], min_n, n_boot)
            for i, name in enumerate(names)]
    big = sizes >= min_n
    rows += _disparity_rows(names[big], values[big], sizes[big], boot[:, big], alpha=alpha,
                            n_boot=n_boot)
    return rows


def _group_row(name, value, lo, hi, n, min_n, n_boot) -> dict:
    row = {"group": str(name), "value": _as_float(value), "ci_low": None, "ci_high": None,
           "n": int(n)}
    if n < min_n:
        row["note"] = TOO_FEW
    elif n_boot > 0:
        row["ci_low"], row["ci_high"] = _as_float(lo), _as_float(hi)
    return row


def _inverse(x):
    """1/x for the max/min ratio; 1/0 (lowest group at rate 0) is unbounded: None."""
    x = _as_float(x)
    return None if x is None or x == 0 else 1.0 / x


def _disparity_rows(names, values, sizes, boot, *, alpha, n_boot) -> list[dict]:
    """Ratio (max / min) and difference (max - min) of the group rates, with bootstrap CIs.

    fairlearn's ratio is min/max; the report reads "3x as often", so the row holds its
    inverse. The CI is taken on fairlearn's bounded min/max scale and inverted (percentile
    intervals follow monotone maps), so a resample whose lowest rate is 0 gives an unbounded
    (null) upper end instead of an infinity.
    """
    base = {"group": "max/min", "n": int(sizes.sum())}
    if len(names) < 2:
        note = {"value": None, "ci_low": None, "ci_high": None,
                "note": "fewer than two groups with enough images"}
        return [{**base, "disparity": d, **note} for d in ("ratio", "difference")]
    hi_i, lo_i = int(np.argmax(values)), int(np.argmin(values))
    extremes = {"max_group": str(names[hi_i]), "min_group": str(names[lo_i])}
    with _quiet_nan():
        bmax, bmin = np.nanmax(boot, axis=1), np.nanmin(boot, axis=1)
        r_lo, r_hi = percentile_ci(bmin / bmax, alpha=alpha)
        d_lo, d_hi = percentile_ci(bmax - bmin, alpha=alpha)
    vmax, vmin = values[hi_i], values[lo_i]
    ratio = {"value": _inverse(vmin / vmax if vmax > 0 else np.nan),
             "ci_low": _inverse(r_hi), "ci_high": _inverse(r_lo)}
    diff = {"value": _as_float(vmax - vmin), "ci_low": _as_float(d_lo), "ci_high": _as_float(d_hi)}
    if n_boot <= 0:
        ratio.update(ci_low=None, ci_high=None)
        diff.update(ci_low=None, ci_high=None)
    if ratio["value"] is None and vmax > 0:
        ratio["note"] = "lowest group rate is 0: the ratio is unbounded"
    return [{**base, "disparity": "ratio", **ratio, **extremes},
            {**base, "disparity": "difference", **diff, **extremes}]


# --- ranking skew (Geyik et al. 2019; Berg et al. 2022) ---------------------------------

def desired_distribution(groups: Sequence, *, kind: str = "dataset") -> dict[str, float]:
    """p_desired per group: its share of the dataset ("dataset", demographic parity) or
    1/#groups ("uniform", equal representation)."""
    names, counts = np.unique(np.asarray(groups).astype(str), return_counts=True)
    if kind == "dataset":
        shares = counts / counts.sum()
    elif kind == "uniform":
        shares = np.full(len(names), 1.0 / len(names))
    else:
        raise ValueError(f"desired distribution must be 'dataset' or 'uniform', not {kind!r}")
    return {str(n): float(s) for n, s in zip(names, shares)}


def _topk_counts(ranked_groups, desired: Mapping[str, float], k: int):
    """Cumulative group counts of the top-i items, i = 1..k: (k, G), plus q (G,)."""
    ranked = np.asarray(ranked_groups).astype(str)[:k]
    if k < 1 or ranked.size < k:
        raise ValueError(f"k={k} needs 1 <= k <= {ranked.size} (the ranking's length)")
    names = np.array(list(desired))
    q = np.array([desired[n] for n in names], dtype=float)
    onehot = ranked[:, None] == names[None, :]
    return np.cumsum(onehot, axis=0), q


def max_skew_at_k(ranked_groups: Sequence, *, k: int, desired: Mapping[str, float]) -> float:
    """MaxSkew@k = max_a ln(p_topk(a) / p_desired(a)); a zero count counts as one (p = 1/k),
    as in Berg et al.'s code, so the log stays finite. Groups with p_desired 0 are skipped."""
    cum, q = _topk_counts(ranked_groups, desired, k)
    return float(_max_skew_from_counts(cum[-1][None, :], q, k)[0])


def _max_skew_from_counts(counts: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """MaxSkew for each row of top-k counts (R, G)."""
    p = np.maximum(counts, 1) / k
    ok = q > 0
    return np.max(np.log(p[:, ok] / q[ok]), axis=1)


def ndkl(ranked_groups: Sequence, *, k: int, desired: Mapping[str, float]) -> float:
    """NDKL = (1/Z) sum_{i=1..k} KL(D_top-i || D_desired) / log2(i+1), Z = sum 1/log2(i+1).

    KL in nats with 0 ln 0 = 0 (Berg et al.'s convention). O(k * groups): the top-i
    distributions are cumulative counts, never recounted.
    """
    cum, q = _topk_counts(ranked_groups, desired, k)
    i = np.arange(1, k + 1)
    d = cum / i[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(d > 0, d * np.log(d / q), 0.0)
    kl = terms.sum(axis=1)
    w = 1.0 / np.log2(i + 1)
    return float((kl * w).sum() / w.sum())


def max_skew_null(groups: Sequence, *, k: int, desired: Mapping[str, float],
                  n_perm: int = 10000, seed: int = 0) -> np.ndarray:
    """MaxSkew@k of random rankings of the same images: (n_perm,) samples.

    The top k of a random ranking is a draw without replacement, so its group counts are
    multivariate hypergeometric; no ranking is materialised.
    """
    g = np.asarray(groups).astype(str)
    names = list(desired)
    counts = np.array([(g == n).sum() for n in names], dtype=np.int64)
    q = np.array([desired[n] for n in names], dtype=float)
    draws = _rng(seed).multivariate_hypergeometric(counts, k, size=n_perm)
    return _max_skew_from_counts(draws, q, k)


def random_query_rankings(images: np.ndarray, *, k: int, n_queries: int = 4000, seed: int = 0,
                          chunk: int = 256) -> np.ndarray:
    """The top k images (k, n_queries), best first, for random directions of the embedding
    space. Where images cluster by group (every trained CLIP), any query ranks one cluster
    first, so random *rankings* are the wrong yardstick for a query's skew; random *queries*
    share the geometry and carry no concept. Isotropic Gaussian directions, seeded;
    O(images x n_queries)."""
    images = np.asarray(images, dtype=np.float32)
    n, k = len(images), min(k, len(images))
    rng = _rng(seed)
    out = []
    for s in range(0, n_queries, chunk):
        sims = images @ rng.standard_normal((images.shape[1], min(chunk, n_queries - s)), dtype=np.float32)
        top = np.argpartition(-sims, k - 1, axis=0)[:k] if k < n else np.arange(n)[:, None].repeat(sims.shape[1], 1)
        out.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 0), axis=0, kind="stable"), 0))
    return np.concatenate(out, axis=1).astype(np.int32)


def max_skew_of_rankings(top: np.ndarray, groups: Sequence, *, ks: Sequence[int],
                         desired: Mapping[str, float]) -> dict[int, np.ndarray]:
    """MaxSkew@k of each ranking in `top` (k_max, R) of image indices: {k: (R,)}."""
    names = list(desired)
    q = np.array([desired[n] for n in names], dtype=float)
    onehot = np.eye(len(names), dtype=np.float32)[[names.index(g) for g in np.asarray(groups).astype(str)]]
    out = {k: [] for k in ks}
    for s in range(0, top.shape[1], 512):   # (k_max, 512, groups) floats at a time
        cum = np.cumsum(onehot[top[:, s:s + 512]], axis=0)
        for k in ks:
            out[k].append(_max_skew_from_counts(cum[k - 1], q, k))
    return {k: np.concatenate(v) for k, v in out.items()}


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p-value of `observed` against null samples, (1 + #{null >= obs}) / (1 + N)."""
    null = np.asarray(null)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


def bootstrap_weights(n: int, *, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) copies of each item in resamples of n items with replacement (float32:
    exact for counts below 2**24, and fast in the matrix products below)."""
    return _rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float32)


def _top_prefix(w: np.ndarray, k: int):
    """The first m ranks hold every resample's top k (almost always m ~ 2k, else all):
    (m, copies ranked before each of them)."""
    n = w.shape[1]
    for m in (min(n, 2 * k + 200), n):
        cum = np.cumsum(w[:, :m], axis=1)
        if m == n or cum[:, -1].min() >= k:
            return m, cum - w[:, :m]


def bootstrap_max_skew(ranked_groups: Sequence, *, ks: Sequence[int], kind: str = "dataset",
                       n_boot: int = 200, seed: int = 0, alpha: float = 0.05,
                       weights: np.ndarray | None = None) -> dict:
    """Percentile CI of MaxSkew@k per k, resampling the ranked images with replacement.

    A resample keeps the ranking: image i appears w_i times at its rank, so its copies inside
    the top k number clip(k - (copies ranked before it), 0, w_i). p_desired is recomputed
    from each resample ("dataset") or stays 1/#groups ("uniform"). `weights` (n_boot, n), in
    rank order, lets several rankings of the same images share one set of resamples.
    Returns {k: (lo, hi)}.
    """
    names, codes = np.unique(np.asarray(ranked_groups).astype(str), return_inverse=True)
    onehot = np.eye(len(names), dtype=np.float32)[codes]
    n = len(codes)
    w = bootstrap_weights(n, n_boot=n_boot, seed=seed) if weights is None else weights
    if kind == "dataset":
        q = w @ onehot / n
    else:
        q = np.full((len(w), len(names)), 1.0 / len(names))
    m, before = _top_prefix(w, max(ks))
    out = {}
    for k in ks:
        counts = np.clip(k - before, 0, w[:, :m]) @ onehot[:m]
        with np.errstate(divide="ignore"):
            skew = np.where(q > 0, np.log(np.maximum(counts, 1) / k / q), -np.inf)
        lo, hi = percentile_ci(skew.max(axis=1), alpha=alpha)
        out[k] = (_as_float(lo), _as_float(hi))
    return out


def excess_p_value(k_group: int, n_group: int, k_all: int, n_all: int) -> float:
    """One-sided Fisher exact test that a group's rate exceeds the rest's: the chance that
    n_group images drawn at random from all n_all (k_all of them positive) hold k_group or
    more positives (hypergeometric upper tail). Arrays give an array, element by element."""
    from scipy.stats import hypergeom

    p = hypergeom.sf(np.asarray(k_group) - 1, n_all, k_all, n_group)
    return float(p) if np.ndim(p) == 0 else p


def excess_tests(hit: np.ndarray, groups: Sequence, *, min_n: int) -> list[dict]:
    """Per group (n >= min_n) under each of T wordings (hit: (n_images, T) bools): the group's
    rate, the overall rate and the one-sided Fisher exact p-value of the group's excess over all
    images (1 where the group is not above the overall rate). The one excess test every probe
    uses (fairface_label_bias, prompt_sensitivity), so a verdict means the same everywhere."""
    hit, groups = np.asarray(hit, dtype=bool), np.asarray(groups)
    if hit.ndim == 1:
        hit = hit[:, None]
    n, k_all = len(groups), hit.sum(axis=0)
    out = []
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        n_g = int(mask.sum())
        if n_g < min_n:
            continue
        k = hit[mask].sum(axis=0)
        rate, overall = k / n_g, k_all / n
        p = np.where(rate > overall, excess_p_value(k, n_g, k_all, n), 1.0)
        out.append({"group": g, "n": n_g, "rate": rate, "overall": overall, "p": np.atleast_1d(p)})
    return out


def difference_p_value(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided Fisher exact test that two groups' rates differ (k of n positive in each):
    the test of a recall gap between two groups of people, either way (person_class_bias)."""
    from scipy.stats import fisher_exact

    if n_a == 0 or n_b == 0:
        return 1.0
    return float(fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]], alternative="two-sided")[1])


def mcnemar_exact(moved_in: int, moved_out: int) -> float:
    """Two-sided exact McNemar p-value: with no change, each of the b + c images that moved went
    either way with probability 1/2, so b ~ Binomial(b + c, 1/2)."""
    n = int(moved_in) + int(moved_out)
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(moved_in), n, 0.5, alternative="two-sided").pvalue)


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values (adjusted < alpha keeps the family-wise error at
    alpha; never less powerful than Bonferroni, and it needs no independence)."""
    p = np.asarray(p_values, dtype=float)
    m, out, running = p.size, np.empty(p.size), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def wordings_holding(p: np.ndarray, rate: np.ndarray, overall: np.ndarray, *, cutoff: float) -> int:
    """How many wordings show the excess significantly, in the same (upward) direction."""
    p, rate, overall = np.atleast_1d(p), np.atleast_1d(rate), np.atleast_1d(overall)
    return int(((p < cutoff) & (rate > overall)).sum())


def is_robust(holding: int, wordings: int, *, share: float = 2 / 3) -> bool:
    """The robustness rule: a finding holds under at least `share` of the panel's wordings."""
    return wordings > 0 and holding >= math.ceil(share * wordings - 1e-9)
