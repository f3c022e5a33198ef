"Every statistic of mcal.metrics against an independent computation."
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from mcal.core import MCalError
from mcal.metrics import (auc, auc_ci, delong_variance, delong_paired, delong_unpaired, patient_bootstrap, binary_metrics,
                          OperatingPoint, brier, expected_calibration_error, roc_points)
from mcal.clinical import birads_score, results_table


def _psi(x, y): return (x > y) + 0.5 * (x == y)


def _direct_components(y, s):
    "Placement values by the O(m·n) definition (DeLong 1988), no ranks."
    pos, neg = s[y == 1], s[y == 0]
    k = _psi(pos[:, None], neg[None, :])
    return k.mean(1), k.mean(0)


def _data(seed, n=70, shift=1.0, tie=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n); y[:2] = [0, 1]
    s = y * shift + rng.normal(size=n)
    return y, (np.round(s) if tie else s)


@pytest.mark.parametrize('seed,tie', [(0, False), (1, True), (2, False), (3, True)])
def test_auc_matches_sklearn(seed, tie):
    y, s = _data(seed, tie=tie)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize('seed,tie', [(0, False), (1, True), (5, True)])
def test_delong_variance_matches_direct_placements(seed, tie):
    y, s = _data(seed, tie=tie)
    v10, v01 = _direct_components(y, s)
    direct = v10.var(ddof=1) / len(v10) + v01.var(ddof=1) / len(v01)
    assert delong_variance(y, s) == pytest.approx(direct, rel=1e-10)


def test_paired_covariance_matches_direct():
    y, a = _data(7)
    b = a + np.random.default_rng(8).normal(size=len(a))          # a correlated second score
    a10, a01 = _direct_components(y, a); b10, b01 = _direct_components(y, b)
    cov01 = np.cov(a10, b10)[0, 1] / len(a10) + np.cov(a01, b01)[0, 1] / len(a01)
    r = delong_paired(y, a, b)
    assert r['covariance'][0, 1] == pytest.approx(cov01, rel=1e-10)
    var = r['covariance'][0, 0] + r['covariance'][1, 1] - 2 * cov01
    assert r['p'] == pytest.approx(2 * stats.norm.sf(abs((a10.mean() - b10.mean()) / np.sqrt(var))), rel=1e-10)


def test_paired_test_is_more_powerful_than_unpaired_for_correlated_scores():
    y, a = _data(11, n=120)
    b = a + np.random.default_rng(12).normal(scale=0.4, size=len(a)) - 0.3 * y
    assert delong_paired(y, a, b)['p'] < delong_unpaired(y, a, y, b)['p']


def test_delong_ci_coverage_on_binormal_data():
    "Binormal model with d = 1: true AUC = Φ(1/√2). The 95 % DeLong interval should cover it ~95 % of the time."
    true_auc, hits, rng = stats.norm.cdf(1 / np.sqrt(2)), 0, np.random.default_rng(42)
    for _ in range(400):
        y = np.r_[np.zeros(40), np.ones(40)].astype(int); s = rng.normal(size=80) + y
        _, lo, hi = auc_ci(y, s); hits += lo <= true_auc <= hi
    assert 0.91 <= hits / 400 <= 0.985


def test_patient_bootstrap_coverage_on_binormal_data():
    true_auc, hits, rng, sims = stats.norm.cdf(1 / np.sqrt(2)), 0, np.random.default_rng(7), 80
    for i in range(sims):
        y = np.r_[np.zeros(30), np.ones(30)].astype(int); s = rng.normal(size=60) + y
        ci = patient_bootstrap(auc, y, s, n_boot=200, seed=i)
        hits += ci.low['value'] <= true_auc <= ci.high['value']
    assert 0.85 <= hits / sims <= 1.0


def test_bootstrap_resamples_patients_not_rois():
    "Duplicated ROIs of one patient travel together: the CI is as wide as with one ROI per patient."
    y, s = _data(3, n=40)
    single = patient_bootstrap(auc, y, s, n_boot=400, seed=0)
    dup = patient_bootstrap(auc, np.repeat(y, 3), np.repeat(s, 3), patient_ids=np.repeat(np.arange(40), 3), n_boot=400, seed=0)
    naive = patient_bootstrap(auc, np.repeat(y, 3), np.repeat(s, 3), n_boot=400, seed=0)
    width = lambda c: c.high['value'] - c.low['value']
    assert width(dup) == pytest.approx(width(single), rel=0.15)
    assert width(naive) < 0.75 * width(dup)


def test_binary_metrics_by_hand():
    y = [1, 1, 1, 0, 0, 0, 0]; s = [0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05]
    m = binary_metrics(y, s, 0.5)
    assert (m['tp'], m['fn'], m['fp'], m['tn']) == (2, 1, 1, 3)
    assert m['sensitivity'] == pytest.approx(2 / 3) and m['specificity'] == pytest.approx(3 / 4)
    assert m['ppv'] == pytest.approx(2 / 3) and m['npv'] == pytest.approx(3 / 4) and m['accuracy'] == pytest.approx(5 / 7)


def test_youden_threshold_is_fitted_on_validation_only():
    yv, sv = _data(21); yt, st = _data(22)
    op = OperatingPoint.fit(yv, sv)
    pts = roc_points(yv, sv).iloc[1:]
    j = pts.tpr - pts.fpr
    assert op.threshold == pts.threshold.iloc[int(np.argmax(j))] and op.n_fitted == len(yv)
    assert op.apply(yt, st) == binary_metrics(yt, st, op.threshold)


def test_reader_birads_operating_point_and_ties():
    birads = ['2', '3', '4A', '4B', '5', '4C', '3', '0', None]
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0])
    r = birads_score(birads)
    k = np.isfinite(r)
    assert k.sum() == 7
    m = binary_metrics(y[k], r[k], 4.0)                  # BI-RADS >= 4 = biopsy
    assert (m['tp'], m['fp'], m['fn'], m['tn']) == (3, 1, 1, 2)
    assert auc(y[k], r[k]) == pytest.approx(roc_auc_score(y[k], r[k]))


def test_results_table_model_on_every_case_reader_and_paired_test_on_theirs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60); y[:2] = [0, 1]
    s = y + rng.normal(size=60)
    birads = np.where(y == 1, rng.choice(['4B', '5'], 60), rng.choice(['2', '4A'], 60)).astype(object); birads[5] = None
    t = results_table(y, s, birads, patient_ids=np.arange(60), threshold=0.5, n_boot=100)
    keep = np.arange(60) != 5
    assert t.attrs['excluded_without_birads'] == 1 and t.attrs['n_paired'] == 59
    assert t.loc['model', 'N benign / malignant'] == f'{(y == 0).sum()} / {(y == 1).sum()}'             # every case
    assert t.loc['reader (BI-RADS ≥ 4)', 'N benign / malignant'] == f'{(y[keep] == 0).sum()} / {(y[keep] == 1).sum()}'
    assert t.attrs['delong']['p'] == pytest.approx(delong_paired(y[keep], s[keep], birads_score(birads[keep]))['p'])
    assert t.loc['model', 'AUC [95% CI]'].startswith(f'{auc(y, s):.2f}')


def test_degenerate_inputs_are_errors():
    with pytest.raises(MCalError, match='only one class'): auc([0, 0, 0], [1, 2, 3])
    with pytest.raises(MCalError, match='NaN or infinite'): auc([0, 1], [np.inf, 1])
    with pytest.raises(MCalError, match='labels but'): delong_variance([0, 1, 0], [1, 2])
    with pytest.raises(MCalError, match='labels must be'): auc([0, 2], [1, 2])
    assert auc_ci([0, 1, 0, 1], [1, 1, 1, 1]) == (0.5, 0.5, 0.5)          # documented: all tied


def test_calibration_against_definitions():
    y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.6, 0.9])
    assert brier(y, p) == pytest.approx(np.mean((p - y) ** 2))
    # two bins of width 0.5: {0.1, 0.4} observed 0, {0.6, 0.9} observed 1
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.25 + 0.5 * 0.25)


def test_delong_paired_ci_follows_level():
    "The interval of the difference is difference ± z(level)·se, with se from the paired covariance; z and p do not move."
    y, a = _data(13)
    b = a + np.random.default_rng(14).normal(size=len(a))
    widths = {}
    for level in (0.80, 0.95, 0.99):
        r = delong_paired(y, a, b, level=level)
        c = r['covariance']; se = np.sqrt(c[0, 0] + c[1, 1] - 2 * c[0, 1])
        z = stats.norm.ppf(0.5 + level / 2)
        assert (r['ci_low'], r['ci_high']) == pytest.approx((r['difference'] - z * se, r['difference'] + z * se), rel=1e-12)
        widths[level] = r['ci_high'] - r['ci_low']
    assert widths[0.80] < widths[0.95] < widths[0.99]
    assert delong_paired(y, a, b, level=0.99)['p'] == delong_paired(y, a, b)['p']
    with pytest.raises(MCalError, match='level must be a confidence between 0 and 1'): delong_paired(y, a, b, level=95)


def test_birads_zero_only_documented_values():
    assert np.isnan(birads_score(['0'])[0]) and birads_score(['0'], zero='suspicious')[0] == 4.0
    for bad in ('include', 'Suspicious', None, 4):
        with pytest.raises(MCalError, match=f'zero={bad!r}'): birads_score(['2', '0'], zero=bad)
    y = [0, 1, 0, 1]
    with pytest.raises(MCalError, match="zero='recall'"): results_table(y, [0.1, 0.9, 0.2, 0.8], ['2', '5', '3', '0'], zero='recall', n_boot=10)
