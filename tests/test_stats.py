"""audit.stats against independent computations: plain loops, pandas, fairlearn's own bootstrap."""
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from audit import stats


def loop_bootstrap_means(x, n_boot, seed):
    """The textbook bootstrap: resample indices, take the mean, n_boot times."""
    rng = np.random.default_rng(seed)
    return np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(n_boot)])


# --- bootstrap_rate --------------------------------------------------------------------

def test_bootstrap_rate_matches_index_resampling():
    x = (np.random.default_rng(1).random(400) < 0.3).astype(int)
    value, lo, hi = stats.bootstrap_rate(x, n_boot=4000, seed=0)
    ref = loop_bootstrap_means(x, 4000, seed=7)
    assert value == pytest.approx(x.mean())
    # Two Monte Carlo estimates of the same quantiles: agree to well under the CI width.
    assert lo == pytest.approx(np.quantile(ref, 0.025), abs=0.008)
    assert hi == pytest.approx(np.quantile(ref, 0.975), abs=0.008)


def test_bootstrap_rate_width_is_binomial_and_seeded():
    x = np.r_[np.ones(150), np.zeros(350)]
    value, lo, hi = stats.bootstrap_rate(x, n_boot=4000, seed=3)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 500)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert lo < 0.3 < hi
    assert stats.bootstrap_rate(x, n_boot=4000, seed=3) == (value, lo, hi)
    # Quantiles of a 0/1 mean sit on a 1/500 grid, so compare small-n_boot draws.
    assert stats.bootstrap_rate(x, n_boot=20, seed=3) != stats.bootstrap_rate(x, n_boot=20, seed=4)


def test_bootstrap_rate_edge_cases():
    assert stats.bootstrap_rate(np.array([])) == (None, None, None)
    assert stats.bootstrap_rate(np.zeros(30)) == (0.0, 0.0, 0.0)
    assert stats.bootstrap_rate(np.ones(30), n_boot=0) == (1.0, None, None)


# --- paired_bootstrap_diff -------------------------------------------------------------

def planted_pairs(n, flip, seed):
    """a: denigrated under label set A; b: the same images under B, where a `flip` share
    of the denigrated ones are rescued. True effect: mean(b - a) = -flip * P(a)."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.4
    b = a & (rng.random(n) >= flip)
    return a.astype(float), b.astype(float)


def test_paired_diff_contains_truth_and_excludes_zero():
    a, b = planted_pairs(2000, flip=0.5, seed=0)
    diff, lo, hi = stats.paired_bootstrap_diff(b, a, n_boot=2000, seed=0)
    assert diff == pytest.approx(b.mean() - a.mean())
    assert lo < -0.2 < hi  # true effect -0.5 * 0.4
    assert hi < 0


def test_paired_diff_no_effect_contains_zero():
    a, b = planted_pairs(500, flip=0.0, seed=1)
    rng = np.random.default_rng(2)
    b = np.where(rng.random(500) < 0.1, 1 - b, b)  # symmetric noise, no net effect
    diff, lo, hi = stats.paired_bootstrap_diff(b, a, n_boot=2000, seed=0)
    assert lo < 0 < hi


def test_paired_diff_is_narrower_than_unpaired():
    a, b = planted_pairs(1000, flip=0.2, seed=3)
    _, lo, hi = stats.paired_bootstrap_diff(b, a, n_boot=2000, seed=0)
    boot_a = loop_bootstrap_means(a, 500, seed=1)
    boot_b = loop_bootstrap_means(b, 500, seed=2)
    unpaired = np.quantile(boot_b - boot_a, [0.025, 0.975])
    assert hi - lo < 0.7 * (unpaired[1] - unpaired[0])


def test_diff_of_means_ci_matches_the_welch_interval():
    """Two independent samples, each resampled on its own: the bootstrap interval of the
    difference of means is close to the normal (Welch) interval computed by hand."""
    rng = np.random.default_rng(3)
    a, b = rng.random(800) < 0.12, rng.random(1500) < 0.05
    value, lo, hi = stats.bootstrap_diff_of_means(a, b, n_boot=4000, seed=0)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert value == pytest.approx(a.mean() - b.mean())
    assert lo == pytest.approx(value - 1.96 * se, abs=0.004) and hi == pytest.approx(value + 1.96 * se, abs=0.004)
    assert stats.bootstrap_diff_of_means(a, b, n_boot=0)[1:] == (None, None)


def test_paired_diff_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff(np.ones(3), np.ones(4))


# --- rates_by_group --------------------------------------------------------------------

def grouped_fixture(seed=0):
    rng = np.random.default_rng(seed)
    groups = np.array(["A"] * 120 + ["B"] * 100 + ["C"] * 80 + ["tiny"] * 5)
    p = {"A": 0.1, "B": 0.4, "C": 0.2, "tiny": 1.0}
    x = np.array([rng.random() < p[g] for g in groups])
    return x, groups


def test_rates_by_group_values_and_notes():
    x, groups = grouped_fixture()
    rows = stats.rates_by_group(x, groups, n_boot=500, seed=0, min_n=20)
    by = {r["group"]: r for r in rows if "disparity" not in r}
    expected = pd.Series(x).groupby(groups).mean()
    assert sorted(by) == ["A", "B", "C", "tiny"]
    for g, r in by.items():
        assert r["value"] == pytest.approx(expected[g])
        assert r["n"] == int((groups == g).sum())
    assert by["tiny"]["ci_low"] is None and by["tiny"]["note"] == "too few images"
    assert all(by[g]["ci_low"] <= by[g]["value"] <= by[g]["ci_high"] for g in "ABC")


def test_disparities_exclude_small_groups():
    x, groups = grouped_fixture()
    rows = stats.rates_by_group(x, groups, n_boot=500, seed=0, min_n=20)
    disp = {r["disparity"]: r for r in rows if "disparity" in r}
    big = pd.Series(x).groupby(groups).mean().drop("tiny")
    assert disp["ratio"]["value"] == pytest.approx(big.max() / big.min())
    assert disp["difference"]["value"] == pytest.approx(big.max() - big.min())
    assert disp["ratio"]["max_group"] == "B" and disp["ratio"]["min_group"] == "A"
    assert disp["ratio"]["n"] == 300 and disp["ratio"]["group"] == "max/min"
    assert disp["difference"]["ci_low"] > 0  # 0.4 vs 0.1 at n=100: clearly apart


def test_rates_by_group_cis_match_fairlearn_bootstrap():
    """fairlearn's MetricFrame bootstrap (resampling rows in a loop) is the oracle."""
    from fairlearn.metrics import MetricFrame
    x, groups = grouped_fixture(seed=5)
    keep = groups != "tiny"
    x, groups = x[keep].astype(int), groups[keep]
    mf = MetricFrame(metrics=lambda yt, yp: float(np.mean(yp)), y_true=x, y_pred=x,
                     sensitive_features=groups, n_boot=300, ci_quantiles=[0.025, 0.975],
                     random_state=0)
    rows = stats.rates_by_group(x, groups, n_boot=4000, seed=0, min_n=20)
    by = {r["group"]: r for r in rows if "disparity" not in r}
    lo, hi = mf.by_group_ci
    for g in "ABC":
        assert by[g]["value"] == pytest.approx(mf.by_group[g])
        assert by[g]["ci_low"] == pytest.approx(lo[g], abs=0.025)
        assert by[g]["ci_high"] == pytest.approx(hi[g], abs=0.025)
    disp = {r["disparity"]: r for r in rows if "disparity" in r}
    assert disp["difference"]["value"] == pytest.approx(mf.difference())
    assert disp["ratio"]["value"] == pytest.approx(1 / mf.ratio())
    d_lo, d_hi = mf.difference_ci()
    assert disp["difference"]["ci_low"] == pytest.approx(d_lo, abs=0.035)
    assert disp["difference"]["ci_high"] == pytest.approx(d_hi, abs=0.035)
    r_lo, r_hi = mf.ratio_ci()  # fairlearn's ratio is min/max; ours is its inverse
    assert 1 / disp["ratio"]["ci_high"] == pytest.approx(r_lo, abs=0.06)
    assert 1 / disp["ratio"]["ci_low"] == pytest.approx(r_hi, abs=0.06)


def test_rates_by_group_all_zero_has_no_ratio():
    groups = np.array(["A"] * 30 + ["B"] * 30)
    rows = stats.rates_by_group(np.zeros(60, bool), groups, n_boot=200, seed=0)
    disp = {r["disparity"]: r for r in rows if "disparity" in r}
    assert disp["ratio"]["value"] is None  # 0/0: no ratio, rather than a fake parity
    assert disp["difference"]["value"] == 0.0


def test_ratio_with_a_zero_group_is_unbounded():
    groups = np.array(["A"] * 40 + ["B"] * 40)
    x = np.r_[np.zeros(40), np.ones(10), np.zeros(30)].astype(bool)
    disp = {r["disparity"]: r for r in stats.rates_by_group(x, groups, n_boot=300)
            if "disparity" in r}
    assert disp["ratio"]["value"] is None and disp["ratio"]["ci_high"] is None
    assert "unbounded" in disp["ratio"]["note"]
    assert disp["difference"]["value"] == pytest.approx(0.25)


def test_rates_by_group_rejects_non_binary():
    with pytest.raises(ValueError):
        stats.rates_by_group(np.array([0, 2, 1]), ["a", "b", "c"])


# --- MaxSkew / NDKL --------------------------------------------------------------------

def slow_max_skew(ranked, k, desired):
    best = -math.inf
    for a, q in desired.items():
        if q == 0:
            continue
        count = sum(1 for g in ranked[:k] if g == a)
        p = count / k if count else 1 / k
        best = max(best, math.log(p / q))
    return best


def slow_ndkl(ranked, k, desired):
    total, z = 0.0, 0.0
    for i in range(1, k + 1):
        top = ranked[:i]
        kl = 0.0
        for a, q in desired.items():
            p = top.count(a) / i
            if p > 0:
                kl += p * math.log(p / q)
        total += kl / math.log2(i + 1)
        z += 1 / math.log2(i + 1)
    return total / z


rankings = st.lists(st.sampled_from("abcd"), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(ranked=rankings, k_frac=st.floats(0.01, 1.0), uniform=st.booleans())
def test_skew_metrics_match_slow_definitions(ranked, k_frac, uniform):
    k = max(1, int(round(k_frac * len(ranked))))
    desired = stats.desired_distribution(ranked, kind="uniform" if uniform else "dataset")
    assert stats.max_skew_at_k(ranked, k=k, desired=desired) == pytest.approx(
        slow_max_skew(ranked, k, desired))
    assert stats.ndkl(ranked, k=k, desired=desired) == pytest.approx(slow_ndkl(ranked, k, desired))


def test_skew_known_answers():
    ranked = ["m", "m", "m", "f", "f", "f", "f", "f"]
    desired = {"m": 0.5, "f": 0.5}
    assert stats.max_skew_at_k(ranked, k=2, desired=desired) == pytest.approx(math.log(2))
    assert stats.max_skew_at_k(ranked, k=8, desired=desired) == pytest.approx(math.log(1.25))
    # A group absent from the top k counts as one image, so MaxSkew stays finite.
    assert stats.max_skew_at_k(["m"] * 4, k=4, desired={"m": 0.5, "f": 0.5}) == pytest.approx(
        math.log(2))
    # NDKL of a ranking that matches the desired shares at every prefix is zero-ish only at
    # even prefixes; a perfectly alternating ranking stays far below an all-one-group one.
    alt = ["m", "f"] * 50
    blocked = ["m"] * 50 + ["f"] * 50
    assert stats.ndkl(alt, k=100, desired=desired) < 0.1 * stats.ndkl(blocked, k=100,
                                                                      desired=desired)
    assert stats.ndkl(["m"] * 10, k=10, desired={"m": 1.0}) == 0.0


def test_skew_rejects_bad_k():
    with pytest.raises(ValueError):
        stats.max_skew_at_k(["a", "b"], k=3, desired={"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError):
        stats.desired_distribution(["a"], kind="zipf")


def test_max_skew_null_matches_random_rankings():
    rng = np.random.default_rng(0)
    groups = np.array(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    desired = stats.desired_distribution(groups)
    null = stats.max_skew_null(groups, k=20, desired=desired, n_perm=20000, seed=1)
    loop = [stats.max_skew_at_k(rng.permutation(groups), k=20, desired=desired)
            for _ in range(3000)]
    assert null.mean() == pytest.approx(np.mean(loop), abs=0.02)
    assert np.quantile(null, 0.95) == pytest.approx(np.quantile(loop, 0.95), abs=0.06)
    # A ranking with all of 'c' on top is far beyond chance; a random one is not.
    top_c = stats.max_skew_at_k(np.r_[groups[-10:], groups[:-10]], k=20, desired=desired)
    assert stats.permutation_p_value(top_c, null) < 0.001
    assert stats.permutation_p_value(loop[0], null) > 0.001


def test_bootstrap_max_skew_matches_resampling_loop():
    """Oracle: resample images, keep their original rank order, recompute MaxSkew."""
    rng = np.random.default_rng(0)
    ranked = np.array(["m"] * 15 + ["f"] * 5 + list(rng.choice(["m", "f", "x"], 60)))
    fast = stats.bootstrap_max_skew(ranked, ks=(10, 30), n_boot=4000, seed=1)
    for k in (10, 30):
        loop = []
        for _ in range(1500):
            idx = np.sort(rng.integers(0, len(ranked), len(ranked)))  # sorted = rank order kept
            res = ranked[idx]
            loop.append(stats.max_skew_at_k(res, k=k, desired=stats.desired_distribution(res)))
        lo, hi = np.quantile(loop, [0.025, 0.975])
        assert fast[k][0] == pytest.approx(lo, abs=0.08)
        assert fast[k][1] == pytest.approx(hi, abs=0.08)
        observed = stats.max_skew_at_k(ranked, k=k, desired=stats.desired_distribution(ranked))
        assert fast[k][0] <= observed <= fast[k][1]


def test_bootstrap_max_skew_is_exact_for_given_resamples():
    """Same resamples, expanded into explicit ranked lists: identical intervals. n >> k, so
    only the top prefix of the ranking is scanned."""
    rng = np.random.default_rng(4)
    ranked = np.array(["a"] * 40 + list(rng.choice(["a", "b", "c", "d"], 2960)))
    w = stats.bootstrap_weights(len(ranked), n_boot=300, seed=2)
    for kind in ("dataset", "uniform"):
        fast = stats.bootstrap_max_skew(ranked, ks=(10, 100), kind=kind, weights=w)
        for k in (10, 100):
            explicit = []
            for b in range(len(w)):
                res = np.repeat(ranked, w[b].astype(int))
                desired = stats.desired_distribution(res, kind=kind)
                explicit.append(stats.max_skew_at_k(res, k=k, desired=desired))
            assert fast[k] == pytest.approx(tuple(np.quantile(explicit, [0.025, 0.975])))


@pytest.mark.parametrize("k, n, K, N", [(5, 10, 8, 40), (0, 5, 3, 20), (9, 12, 10, 30),
                                        (3, 3, 3, 50)])
def test_excess_p_value_is_the_hypergeometric_tail(k, n, K, N):
    tail = sum(math.comb(K, j) * math.comb(N - K, n - j) for j in range(k, min(n, K) + 1))
    assert stats.excess_p_value(k, n, K, N) == pytest.approx(tail / math.comb(N, n))


def test_random_query_max_skew_equals_ranking_each_direction():
    from audit.stats import (desired_distribution, max_skew_at_k, max_skew_of_rankings,
                             random_query_rankings)

    rng = np.random.default_rng(0)
    images = rng.normal(size=(300, 8)).astype(np.float32)
    groups = rng.choice(["a", "b", "c"], 300)
    desired = desired_distribution(groups)
    top = random_query_rankings(images, k=300, n_queries=40, seed=3, chunk=16)
    got = max_skew_of_rankings(top, groups, ks=(5, 50, 300), desired=desired)
    rng = np.random.default_rng(3)                  # the same draws, chunk by chunk
    dirs = np.hstack([rng.standard_normal((8, c), dtype=np.float32) for c in (16, 16, 8)])
    for j in range(40):
        ranked = groups[np.argsort(-(images @ dirs[:, j]), kind="stable")]
        for k in (5, 50, 300):
            assert got[k][j] == pytest.approx(max_skew_at_k(ranked, k=k, desired=desired), abs=1e-6)


def test_excess_tests_match_scipy_fisher_per_wording():
    """The shared excess test is scipy's one-sided Fisher exact test of the group against the
    rest (the same p as the hypergeometric tail against all images), wording by wording."""
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(3)
    groups = np.array(["a"] * 60 + ["b"] * 140)
    hit = rng.random((200, 3)) < np.where(groups == "a", 0.3, 0.1)[:, None]
    hit[:, 2] = rng.random(200) < 0.1          # no planted excess under the third wording
    tests = {t["group"]: t for t in stats.excess_tests(hit, groups, min_n=20)}
    for w in range(3):
        a, rest = hit[groups == "a", w], hit[groups == "b", w]
        table = [[a.sum(), len(a) - a.sum()], [rest.sum(), len(rest) - rest.sum()]]
        expect = fisher_exact(table, alternative="greater")[1] if a.mean() > hit[:, w].mean() else 1.0
        assert tests["a"]["p"][w] == pytest.approx(expect, rel=1e-9)
        assert tests["a"]["rate"][w] == pytest.approx(a.mean())
        assert tests["a"]["overall"][w] == pytest.approx(hit[:, w].mean())
    assert [t["group"] for t in stats.excess_tests(hit, groups, min_n=61)] == ["b"]


def test_wordings_holding_and_the_two_thirds_rule():
    p = np.array([1e-6, 1e-6, 0.5, 1e-6])
    rate, overall = np.array([0.3, 0.3, 0.3, 0.05]), np.full(4, 0.1)
    assert stats.wordings_holding(p, rate, overall, cutoff=1e-3) == 2  # the 4th is below overall
    assert stats.is_robust(8, 12) and not stats.is_robust(7, 12)
    assert stats.is_robust(2, 3) and not stats.is_robust(1, 3) and not stats.is_robust(0, 0)
