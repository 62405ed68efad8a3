"""DCE-MRI: OSIPI reference data (tests/data/osipi, OSIPI pass rule |x - ref| <= atol +
rtol |ref|), synthetic closed loops with known truth, and input-validation edge cases."""

import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from hybrid.imaging import dce

DATA = Path(__file__).resolve().parents[1] / "data" / "osipi"


def _rows(name):
    with open(DATA / name, encoding="utf-8-sig", newline="") as fh:  # SI2Conc has a BOM
        return list(csv.DictReader(fh))


def _arr(cell):
    return np.array(cell.split(), dtype=float)


def _close(measured, ref, atol, rtol):
    return np.all(np.abs(np.asarray(measured) - ref) <= atol + rtol * np.abs(ref))


# ---------------------------------------------------------------- OSIPI: kinetic models

TOFTS = _rows("dce_DRO_data_tofts.csv")
PATLAK = _rows("patlak_sd_0.02_delay_0.csv")
TCXM = _rows("2cxm_sd_0.001_delay_0.csv")
OSIPI_SHIFT = 5  # OSIPI's loader delays C by 5 samples (2.5 s here) and zero-fills


def _fit_grouped_by_aif(rows, c_key, a_key, model, shift=0, **kw):
    """Fit all cases, one fit call per distinct AIF (the Tofts DRO has one per SNR)."""
    t = _arr(rows[0]["t"])
    groups = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r[a_key]].append(i)
    out = {}
    for aif, idx in groups.items():
        ct = np.stack([_arr(rows[i][c_key]) for i in idx])
        if shift:
            ct = np.concatenate([np.zeros((len(idx), shift)), ct[:, :-shift]], axis=1)
        res = dce.fit(t, ct, _arr(aif), model, **kw)
        for j, i in enumerate(idx):
            out[i] = {k: float(v[j]) for k, v in res.items()}
    return t, out


@pytest.fixture(scope="module")
def tofts_fits():
    return _fit_grouped_by_aif(TOFTS, "C", "ca", "tofts")[1]


@pytest.fixture(scope="module")
def tofts_delayed_fits():
    t, fits = _fit_grouped_by_aif(TOFTS, "C", "ca", "tofts", shift=OSIPI_SHIFT,
                                  fit_delay=True)
    return t[OSIPI_SHIFT] - t[0], fits


@pytest.mark.parametrize("i", range(len(TOFTS)), ids=[r["label"] for r in TOFTS])
def test_osipi_tofts(tofts_fits, i):
    ref, got = TOFTS[i], tofts_fits[i]
    assert _close(got["Ktrans"], float(ref["Ktrans"]), 0.005, 0.1), got
    assert _close(got["ve"], float(ref["ve"]), 0.05, 0.0), got


@pytest.mark.parametrize("i", range(len(TOFTS)), ids=[r["label"] for r in TOFTS])
def test_osipi_tofts_delayed(tofts_delayed_fits, i):
    true_delay, fits = tofts_delayed_fits
    ref, got = TOFTS[i], fits[i]
    assert _close(got["Ktrans"], float(ref["Ktrans"]), 0.005, 0.1), got
    assert _close(got["ve"], float(ref["ve"]), 0.05, 0.0), got
    assert _close(got["delay_s"], float(ref["arterialdelay"]) + true_delay, 1.0, 0.0), got


@pytest.fixture(scope="module")
def patlak_fits():
    return _fit_grouped_by_aif(PATLAK, "C_t", "cp_aif", "patlak")[1]


@pytest.mark.parametrize("i", range(len(PATLAK)), ids=[r["label"] for r in PATLAK])
def test_osipi_patlak(patlak_fits, i):
    ref, got = PATLAK[i], patlak_fits[i]
    assert _close(got["vp"], float(ref["vp"]), 0.025, 0.0), got
    assert _close(got["PS"], float(ref["ps"]), 0.005, 0.1), got


@pytest.fixture(scope="module")
def tcxm_fits():
    return _fit_grouped_by_aif(TCXM, "C_t", "cp_aif", "2cxm")[1]


@pytest.mark.parametrize("i", range(len(TCXM)), ids=[r["label"] for r in TCXM])
def test_osipi_2cxm(tcxm_fits, i):
    ref, got = TCXM[i], tcxm_fits[i]
    assert _close(got["vp"], float(ref["vp"]), 0.025, 0.0), got
    assert _close(got["ve"], float(ref["ve"]), 0.05, 0.0), got
    assert _close(got["Fp"], float(ref["fp"]), 5.0, 0.1), got
    assert _close(got["PS"], float(ref["ps"]), 0.005, 0.1), got


TCXM_DELAYED = _rows("2cxm_sd_0.001_delay_5.csv")
TCUM = _rows("2cum_sd_0.0025_delay_0.csv")
TCUM_DELAYED = _rows("2cum_sd_0.0025_delay_5.csv")


def _check_2cxm_family(ref, got, with_ve):
    assert _close(got["vp"], float(ref["vp"]), 0.025, 0.0), got
    assert _close(got["Fp"], float(ref["fp"]), 5.0, 0.1), got
    assert _close(got["PS"], float(ref["ps"]), 0.005, 0.1), got
    if with_ve:
        assert _close(got["ve"], float(ref["ve"]), 0.05, 0.0), got


@pytest.fixture(scope="module")
def tcxm_delayed_fits():
    return _fit_grouped_by_aif(TCXM_DELAYED, "C_t", "cp_aif", "2cxm", fit_delay=True)[1]


# OSIPI 2CXM delay_5 case 8 (Fp 5, PS 0.15 /min, ve 0.2, vp 0.02, delay 5 s): with the delay
# free, the least-squares optimum of its noisy samples has PS 0.128 +- 0.015 /min, outside
# OSIPI's 0.15 +- 0.02 (test_osipi_2cxm_case_8_delayed_is_the_least_squares_optimum); a fit
# passes it only by stopping early in the flat valley towards the truth. OSIPI does not mark
# the case: its delayed 2CXM tests parametrize all 24 cases with xf_labels=[]
# (OSIPI/DCE-DSC-MRI_CodeCollection test/DCEmodels/test_DCEmodels_2CXM_MJT_UoEdinburgh_UK.py at
# c4b593a3cce6199d48d0045afdb242dd695a2685, test_DCEmodels_2CXM_LEK_UoEdinburgh_UK.py at
# e1a1f818084428df96c1b6b67b2149782ed76c31), so this xfail is ours, not an OSIPI-accepted failure.
# Not our delay model: the data (mjt320/DCE-functions DCEFunc_PKP2Conc: AIF samples held over
# their 0.5 s interval, exact integrals of the impulse response) are delayed by exactly 10
# samples, where our linearly interpolated shift is exact; at the truth the two forward models
# differ by <= 2.2e-6 mM (noise sd 0.001 mM). Residual sum of squares, in units of 0.001^2 mM^2
# over the 600 samples, truth vs optimum: ours 572.8 vs 559.2 (PS 0.128, delay 5.065 s); the
# generator's held samples shifted continuously 572.7 vs 559.3 (PS 0.131, delay 5.046 s); a
# quadratic AIF interpolant (MJT_UoEdinburgh's) 573.0 vs 559.5 (PS 0.132); delay fixed at
# 5 s: PS 0.137 under both. Every model puts the truth 13.4-13.6 above its optimum. They differ
# only in how a sub-sample shift interpolates the AIF, which moves PS by 0.2 standard errors,
# across OSIPI's limit 0.130 (ours below, the others above), and ours fits the samples best.
# Held samples are the generator's discretisation, not a sampled continuous AIF; we keep ours.
NOISE_LIMITED = {"case_8_delayed": "the least-squares optimum of these samples has PS 0.128 "
                                   "+- 0.015 /min, outside OSIPI's 0.15 +- 0.02; residual sum of "
                                   "squares at the truth 572.8, at the optimum 559.2 (units of the "
                                   "noise variance 1e-6 mM^2, 600 samples)"}


@pytest.mark.parametrize(
    "i", [pytest.param(i, marks=pytest.mark.xfail(strict=True, reason=NOISE_LIMITED[r["label"]]))
          if r["label"] in NOISE_LIMITED else i for i, r in enumerate(TCXM_DELAYED)],
    ids=[r["label"] for r in TCXM_DELAYED])
def test_osipi_2cxm_delayed(tcxm_delayed_fits, i):
    ref, got = TCXM_DELAYED[i], tcxm_delayed_fits[i]
    assert _close(got["delay_s"], float(ref["arterial_delay"]), 1.0, 0.0), got
    _check_2cxm_family(ref, got, with_ve=True)


def test_osipi_2cxm_case_8_delayed_is_the_least_squares_optimum(tcxm_delayed_fits):
    """The fit of case 8 is the least-squares optimum that scipy's trust-region fit of the
    public forward model reaches from the OSIPI truth (same residual, PS within a tenth of a
    standard error), and the truth lies within two standard errors of it: the miss of
    OSIPI's PS tolerance is the noise of these samples, not a failed fit."""
    from scipy.optimize import least_squares
    i = [r["label"] for r in TCXM_DELAYED].index("case_8_delayed")
    ref, got = TCXM_DELAYED[i], tcxm_delayed_fits[i]
    t, ct, cp = _arr(ref["t"]), _arr(ref["C_t"]), _arr(ref["cp_aif"])
    truth = [float(ref[k]) for k in ("fp", "ps", "ve", "vp", "arterial_delay")]
    opt = least_squares(lambda q: dce.two_cxm(t, cp, *q[:4], delay_s=q[4]) - ct, truth,
                        bounds=([0, 0, 1e-4, 1e-4, -10], [200, 5, 1, 1, 10]),
                        x_scale=[10, 0.1, 0.1, 0.01, 1], xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert got["rss"] <= 2 * opt.cost * (1 + 1e-6), (got["rss"], 2 * opt.cost)
    assert abs(got["PS"] - opt.x[1]) <= 0.1 * got["PS_se"], (got, opt.x)
    assert abs(got["PS"] - float(ref["ps"])) <= 2 * got["PS_se"], got


@pytest.fixture(scope="module")
def tcum_fits():
    return (_fit_grouped_by_aif(TCUM, "C_t", "cp_aif", "2cum")[1],
            _fit_grouped_by_aif(TCUM_DELAYED, "C_t", "cp_aif", "2cum", fit_delay=True)[1])


@pytest.mark.parametrize("i", range(len(TCUM)), ids=[r["label"] for r in TCUM])
def test_osipi_2cum(tcum_fits, i):
    fits, delayed = tcum_fits
    _check_2cxm_family(TCUM[i], fits[i], with_ve=False)
    ref = TCUM_DELAYED[i]
    _check_2cxm_family(ref, delayed[i], with_ve=False)
    assert _close(delayed[i]["delay_s"], float(ref["arterial_delay"]), 1.0, 0.0), delayed[i]
    assert fits[i]["reason"] == delayed[i]["reason"] == 0


# ---------------------------------------------------------------- OSIPI: AIF, signal, T1

def _aif_cases(name):
    groups = defaultdict(list)
    for r in _rows(name):
        groups[r["label"]].append(r)
    return list(groups.items())


@pytest.mark.parametrize("name, atol, rtol", [("ParkerAIF_ref.csv", 0.01, 1e-4),
                                              ("ParkerAIF_ref_with_delay.csv", 0.1, 0.1)])
def test_osipi_parker_aif(name, atol, rtol):
    cases = _aif_cases(name)
    for label, rows in cases:
        t_min = np.array([float(r["time"]) for r in rows])
        ref = np.array([float(r["Cb"]) for r in rows])
        got = dce.parker_aif(t_min * 60.0, delay_s=float(rows[0]["delay"]))
        assert _close(got, ref, atol, rtol), label
    assert len(cases) == (11 if "delay" not in name else 9)


SI2C = _rows("SI2Conc_data.csv")


@pytest.mark.parametrize("r", SI2C, ids=[r["label"] for r in SI2C])
def test_osipi_signal_to_concentration(r):
    conc = dce.signal_to_concentration(
        _arr(r["s"]), t10_s=float(r["T1base"]), r1_per_mM_s=float(r["r1"]),
        tr_s=float(r["TR"]), flip_angle_deg=float(r["FA"]), n_baseline=int(r["numbaselinepts"]))
    assert _close(conc[1:], _arr(r["conc"])[1:], 1e-5, 1e-5)  # sample 0 not assessed


@pytest.mark.parametrize("method", ["linear", "nonlinear"])
def test_osipi_t1_vfa_qiba(method):
    rows = _rows("t1_quiba_data.csv")
    fa = _arr(rows[0]["FA"])
    tr = _arr(rows[0]["TR"])
    assert all(np.allclose(_arr(r["FA"]), fa) and np.allclose(_arr(r["TR"]), tr) for r in rows)
    t1, m0 = dce.fit_t1_vfa(np.stack([_arr(r["s"]) for r in rows]), fa, tr[0], method=method)
    r1_ref = np.array([float(r["R1"]) for r in rows]) * 1000.0  # file R1 is in 1/ms
    passed = np.abs(1.0 / t1 - r1_ref) <= 0.05 + 0.05 * r1_ref
    assert passed.sum() == len(rows) == 45, np.flatnonzero(~passed)


# ---------------------------------------------------------------- synthetic closed loops

T_SYN = np.arange(150) * 2.0            # 5 min at 2 s
CP_SYN = dce.plasma_aif(dce.parker_aif(T_SYN, delay_s=20.0))


def _etofts_truth(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.5, n), rng.uniform(0.1, 0.6, n), rng.uniform(0.01, 0.1, n), rng


def test_extended_tofts_synthetic_within_osipi_tolerance():
    kt, ve, vp, rng = _etofts_truth(200, seed=1)
    ct = dce.extended_tofts(T_SYN, CP_SYN, kt, ve, vp) + rng.normal(0, 0.01, (200, T_SYN.size))
    got = dce.fit(T_SYN, ct.reshape(10, 20, -1), CP_SYN, "extended_tofts")
    assert got["Ktrans"].shape == (10, 20)
    assert _close(got["Ktrans"].ravel(), kt, 0.005, 0.1)
    assert _close(got["ve"].ravel(), ve, 0.05, 0.0)
    assert _close(got["vp"].ravel(), vp, 0.025, 0.0)
    assert np.all(got["rss"] < 3 * 0.01 ** 2 * T_SYN.size)


def test_delay_fit_synthetic():
    kt, ve, vp, rng = _etofts_truth(20, seed=2)
    delay = 6.0
    ct = dce.extended_tofts(T_SYN, CP_SYN, kt, ve, vp, delay_s=delay)
    ct += rng.normal(0, 0.005, ct.shape)
    got = dce.fit(T_SYN, ct, CP_SYN, "extended_tofts", fit_delay=True,
                  delay_range_s=(0.0, 12.0), delay_step_s=1.0)
    assert _close(got["delay_s"], delay, 1.0, 0.0)
    assert _close(got["Ktrans"], kt, 0.005, 0.1)
    assert _close(got["ve"], ve, 0.05, 0.0)
    assert _close(got["vp"], vp, 0.025, 0.0)


def test_delay_grid_of_one_value_fits_that_delay():
    ct = dce.extended_tofts(T_SYN, CP_SYN, [0.2, 0.1], [0.3, 0.4], [0.05, 0.02], delay_s=4.0)
    got = dce.fit(T_SYN, ct, CP_SYN, "extended_tofts", fit_delay=True, delay_range_s=(4.0, 4.0))
    np.testing.assert_allclose(got["delay_s"], 4.0)
    np.testing.assert_allclose(got["Ktrans"], [0.2, 0.1], rtol=1e-4)


def test_a_given_delay_leaves_the_standard_errors_of_the_fit_at_that_delay():
    """A delay range of one value gives the delay: its standard error is 0 and the others are those
    of the undelayed fit with the AIF shifted by it (4 s, two samples: the shift is exact); before,
    the delay's column stayed in J^T J and widened them."""
    rng = np.random.default_rng(5)
    ct = dce.extended_tofts(T_SYN, CP_SYN, [0.2, 0.1], [0.3, 0.4], [0.05, 0.02], delay_s=4.0)
    ct = ct + rng.normal(0.0, 0.005, ct.shape)
    given = dce.fit(T_SYN, ct, CP_SYN, "extended_tofts", fit_delay=True, delay_range_s=(4.0, 4.0))
    shifted = dce.fit(T_SYN, ct, np.concatenate([np.zeros(2), CP_SYN[:-2]]), "extended_tofts")
    np.testing.assert_array_equal(given["delay_s_se"], 0.0)
    for name in ("Ktrans", "ve", "vp"):
        np.testing.assert_allclose(given[name], shifted[name], rtol=1e-6)
        np.testing.assert_allclose(given[f"{name}_se"], shifted[f"{name}_se"], rtol=1e-3)


@pytest.mark.parametrize("model", ["tofts", "extended_tofts"])
def test_delay_beyond_its_search_range_is_no_estimate(model):
    """True delays of 14 and -14 s end the fit on the ends of the default -10..10 s range
    (extended Tofts: Ktrans 0.25 for a true 0.2): the delay and every parameter fitted with
    it are NaN at a bound (reason 4); a 6 s delay in the same call is estimated."""
    truth = dict(Ktrans=0.2, ve=0.3) if model == "tofts" else dict(Ktrans=0.2, ve=0.3, vp=0.05)
    forward = dce.tofts if model == "tofts" else dce.extended_tofts
    ct = np.stack([forward(T_SYN, CP_SYN, **truth, delay_s=d) for d in (14.0, -14.0, 6.0)])
    got = dce.fit(T_SYN, ct, CP_SYN, model, fit_delay=True)
    np.testing.assert_array_equal(got["reason"], [4, 4, 0])
    for key in list(truth) + ["delay_s"]:
        assert np.all(np.isnan(got[key][:2])) and np.all(np.isnan(got[f"{key}_se"][:2])), key
        assert np.isfinite(got[f"{key}_se"][2]), key
    assert _close(got["delay_s"][2], 6.0, 0.1, 0.0) and _close(got["Ktrans"][2], 0.2, 0.005, 0.0)


def test_delay_without_uptake_is_not_identifiable():
    """Noise alone (Ktrans = 0) says nothing about the delay: no delay is returned whose
    standard error exceeds half the 20 s search range (before: 94 of 100, median 1145 s);
    every NaN delay is flagged not identifiable (2) or at a bound (4)."""
    ct = np.random.default_rng(3).normal(0, 0.02, (100, T_SYN.size))
    got = dce.fit(T_SYN, ct, CP_SYN, "tofts", fit_delay=True)
    lost = np.isnan(got["delay_s"])
    assert not np.any(got["delay_s_se"][~lost] > 10.0), got["delay_s_se"][~lost]
    assert lost.mean() >= 0.9 and np.all(got["reason"][lost] & 6), got["reason"]


def test_patlak_and_2cxm_synthetic_noise_free():
    ct = dce.patlak(T_SYN, CP_SYN, [0.02, 0.1], [0.05, 0.2])
    got = dce.fit(T_SYN, ct, CP_SYN, "patlak")
    np.testing.assert_allclose(got["PS"], [0.02, 0.1], rtol=1e-6)
    np.testing.assert_allclose(got["vp"], [0.05, 0.2], rtol=1e-6)
    ct = dce.two_cxm(T_SYN, CP_SYN, Fp=[30.0, 80.0], PS=[0.1, 0.05], ve=[0.3, 0.2],
                     vp=[0.05, 0.08])
    got = dce.fit(T_SYN, ct, CP_SYN, "2cxm")
    np.testing.assert_allclose(got["Fp"], [30.0, 80.0], rtol=1e-3)
    np.testing.assert_allclose(got["PS"], [0.1, 0.05], rtol=1e-3)


def test_forward_model_limits():
    # Tofts = extended Tofts at vp = 0; 2CXM -> extended Tofts (Ktrans = PS) at high flow
    np.testing.assert_allclose(dce.tofts(T_SYN, CP_SYN, 0.2, 0.3),
                               dce.extended_tofts(T_SYN, CP_SYN, 0.2, 0.3, 0.0), atol=1e-12)
    np.testing.assert_allclose(dce.two_cxm(T_SYN, CP_SYN, 1e6, 0.2, 0.3, 0.05),
                               dce.extended_tofts(T_SYN, CP_SYN, 0.2, 0.3, 0.05), atol=1e-4)
    # Patlak = extended Tofts with kep -> 0 (ve -> infinity is approached by ve = 1e6)
    np.testing.assert_allclose(dce.patlak(T_SYN, CP_SYN, 0.1, 0.05),
                               dce.extended_tofts(T_SYN, CP_SYN, 0.1, 1e6, 0.05), rtol=1e-6,
                               atol=1e-12)


def test_exp_convolve_exact_for_piecewise_linear_input():
    t = np.concatenate([[0.0], np.cumsum(np.random.default_rng(3).uniform(0.5, 3.0, 40))])
    x = np.sin(t / 7.0) ** 2
    k = np.array([0.0, 0.02, 0.5])
    fine = np.linspace(0.0, t[-1], 400001)
    xf = np.interp(fine, t, x)
    for j, kj in enumerate(k):
        ref = np.trapezoid(xf * np.exp(-kj * (t[-1] - fine)), fine)
        assert dce.exp_convolve(t, x, k)[j, -1] == pytest.approx(ref, rel=1e-6)
    # the FFT path (long uniform series) equals the recursion (non-uniform series)
    tu = np.arange(400) * 0.5
    xu = dce.parker_aif(tu, 5.0)
    jitter = tu + np.r_[0.0, np.full(398, 1e-7), 0.0]
    np.testing.assert_allclose(dce.exp_convolve(tu, xu, k), dce.exp_convolve(jitter, xu, k),
                               atol=1e-5)


@pytest.mark.parametrize("n_rows", [3, 40])        # FFT path (few rows) and recursion
def test_exp_convolve_derivative_in_k(n_rows):
    t = np.arange(300) * 1.0
    x = dce.parker_aif(t, 20.0)
    k = np.geomspace(1e-6, 0.5, n_rows)              # includes the small-u series branch
    y, dy = dce.exp_convolve(t, x, k, deriv=True)
    np.testing.assert_allclose(y, dce.exp_convolve(t, x, k), rtol=1e-12, atol=1e-12)
    h = 1e-4 * k + 1e-9
    fd = (dce.exp_convolve(t, x, k + h) - dce.exp_convolve(t, x, k - h)) / (2 * h[:, None])
    assert np.all(np.abs(dy - fd).max(axis=1) <= 1e-7 * np.abs(fd).max(axis=1))


def test_aifs():
    t = np.arange(0.0, 600.0, 0.5)
    pre = dce.preclinical_aif(t, delay_s=10.0)
    assert np.all(pre[t < 10.0] == 0.0)
    assert pre[t == 17.0][0] == pytest.approx(3.4 + 1.81)
    assert pre[t == 117.0][0] == pytest.approx(3.4 * np.exp(-4.5) + 1.81 * np.exp(-0.15))
    cb = dce.parker_aif(t)
    np.testing.assert_allclose(dce.plasma_aif(cb), cb / 0.58)
    conc = np.zeros((4, 5, t.size))
    conc[1, 2] = cb
    conc[3, 4] = 3 * cb
    conc[0, 0] = np.nan
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = mask[3, 4] = mask[0, 0] = True
    np.testing.assert_allclose(dce.measured_aif(conc, mask), 2 * cb)
    # OSIPI preclinicalAIF_ref.csv (acq_time_10min, 2.5 s frames, no delay) at 547.5 and 597.5 s
    np.testing.assert_allclose(dce.preclinical_aif([547.5, 597.5]),
                               [0.8045894315355525, 0.7464526041994471], rtol=1e-12)
    with pytest.raises(ValueError, match="haematocrit"):
        dce.plasma_aif(cb, hct=1.0)
    with pytest.raises(ValueError, match="mask"):
        dce.measured_aif(conc, mask[:3])


def test_plasma_aif_from_blood_signal():
    t = np.arange(0.0, 300.0, 2.0)
    blood = dce.preclinical_aif(t, delay_s=20.0)
    kw = dict(t10_s=2.2, r1_per_mM_s=4.0, tr_s=0.005, flip_angle_deg=20.0, n_baseline=8, hct=0.42)
    signal = np.zeros((3, 4, t.size))
    signal[1:, 2] = dce.spgr_signal(1000.0, 1 / 2.2 + 4.0 * blood, 0.005, 20.0)
    roi = np.zeros((3, 4), bool)
    roi[1:, 2] = True
    np.testing.assert_allclose(dce.plasma_aif_from_blood_signal(signal, roi, **kw), blood / 0.58,
                               atol=1e-9)
    signal[1:, 2, 40] = 0.0   # no concentration for a zero signal: an actionable error
    with pytest.raises(ValueError, match="frame 40"):
        dce.plasma_aif_from_blood_signal(signal, roi, **kw)
    np.testing.assert_allclose(dce.population_plasma_aif("preclinical", t, 20.0, 0.42), blood / 0.58)
    with pytest.raises(ValueError, match="population AIF"):
        dce.population_plasma_aif("georgiou", t, 20.0, 0.42)


def test_vfa_nonlinear_synthetic_and_signal_roundtrip():
    rng = np.random.default_rng(4)
    t1 = rng.uniform(0.3, 3.0, (6, 7))
    fa = np.array([2.0, 5.0, 10.0, 15.0, 25.0])
    s = dce.spgr_signal(1000.0, 1.0 / t1[..., None], 0.005, fa)
    for method in ("linear", "nonlinear"):
        got, m0 = dce.fit_t1_vfa(s, fa, 0.005, method=method)
        np.testing.assert_allclose(got, t1, rtol=1e-6)
        np.testing.assert_allclose(m0, 1000.0, rtol=1e-6)
    conc = dce.extended_tofts(T_SYN, CP_SYN, 0.2, 0.3, 0.05)
    sig = dce.spgr_signal(500.0, 1.0 / 1.2 + 4.5 * conc, 0.004, 15.0)
    back = dce.signal_to_concentration(sig, t10_s=1.2, r1_per_mM_s=4.5, tr_s=0.004,
                                       flip_angle_deg=15.0, n_baseline=5)
    np.testing.assert_allclose(back, conc, atol=1e-9)


# ---------------------------------------------------------------- edge cases

def test_nan_voxels_and_mask():
    kt, ve, vp, _ = _etofts_truth(6, seed=5)
    ct = dce.extended_tofts(T_SYN, CP_SYN, kt, ve, vp).reshape(2, 3, -1)
    ct[0, 1, 7] = np.nan
    ct[1, 0, 3] = np.inf
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False
    got = dce.fit(T_SYN, ct, CP_SYN, "extended_tofts", mask=mask)
    bad = ~mask
    bad[0, 1] = bad[1, 0] = True
    for key in ("Ktrans", "ve", "vp", "Ktrans_se", "rss", "delay_s"):
        assert np.all(np.isnan(got[key][bad])) and np.all(np.isfinite(got[key][~bad])), key
    assert set(got) == {"Ktrans", "ve", "vp", "Ktrans_se", "ve_se", "vp_se", "delay_s", "rss",
                        "reason"}
    assert np.all(got["reason"][bad] == 1) and np.all(got["reason"][~bad] == 0)
    np.testing.assert_allclose(got["Ktrans"][~bad], kt.reshape(2, 3)[~bad], rtol=1e-4)
    assert np.all(np.isnan(dce.fit(T_SYN, np.full((3, T_SYN.size), np.nan), CP_SYN,
                                   "tofts")["Ktrans"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="kety"), "unknown model"),
    (dict(ct_mM=np.zeros((4, 10))), "time last"),
    (dict(cp_mM=np.zeros(10)), "plasma AIF"),
    (dict(t_s=T_SYN[::-1]), "strictly increasing"),
    (dict(mask=np.ones(3, bool)), "mask shape"),
])
def test_fit_bad_inputs(kwargs, match):
    args = dict(t_s=T_SYN, ct_mM=np.zeros((4, T_SYN.size)), cp_mM=CP_SYN, model="tofts")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        dce.fit(**args)


def test_signal_and_vfa_bad_inputs():
    with pytest.raises(ValueError, match="n_baseline"):
        dce.signal_to_concentration(np.ones(10), t10_s=1.0, r1_per_mM_s=4.5, tr_s=0.005,
                                    flip_angle_deg=20, n_baseline=1)
    with pytest.raises(ValueError, match="flip angles"):
        dce.fit_t1_vfa(np.ones((3, 4)), [2.0, 10.0, 20.0], 0.005)
    with pytest.raises(ValueError, match="method"):
        dce.fit_t1_vfa(np.ones((3, 3)), [2.0, 10.0, 20.0], 0.005, method="spline")
    t1, _ = dce.fit_t1_vfa(np.array([[np.nan, 1.0, 2.0], [0.0, 0.0, 0.0]]), [2.0, 10.0, 20.0],
                           0.005)
    assert np.all(np.isnan(t1))


# ---------------------------------------------------------------- physical limits, uncertainty

def test_signal_to_concentration_nan_where_no_physical_inverse():
    # S <= 0 needs E1 >= 1 (R1 <= 0); S >= M0 sin(a) needs E1 <= 0: neither has a concentration
    m0, t10, tr, fa = 500.0, 1.2, 0.004, 15.0
    pre = dce.spgr_signal(m0, 1.0 / t10, tr, fa)
    s = np.array([pre] * 5 + [0.0, -3.0, 1.01 * m0 * np.sin(np.deg2rad(fa)), 1.5 * pre])
    c = dce.signal_to_concentration(s, t10_s=t10, r1_per_mM_s=4.5, tr_s=tr, flip_angle_deg=fa,
                                    n_baseline=5)
    assert np.all(np.isnan(c[5:8])), c
    assert np.all(np.abs(c[1:5]) < 1e-12) and c[8] > 0


def test_volume_limit_enforced_and_flagged():
    # data made with ve + vp = 1.2 (unphysical): the fit stays on ve + vp <= 1 and says so
    ct = dce.extended_tofts(T_SYN, CP_SYN, 0.3, 0.9, 0.3)
    got = dce.fit(T_SYN, ct[None], CP_SYN, "extended_tofts")
    assert got["ve"][0] + got["vp"][0] <= 1.0 + 1e-12
    assert got["reason"][0] & 8
    ct = dce.two_cxm(T_SYN, CP_SYN, 40.0, 0.3, 0.9, 0.3)
    got = dce.fit(T_SYN, ct[None], CP_SYN, "2cxm")
    assert got["ve"][0] + got["vp"][0] <= 1.0 + 1e-12


def test_ve_not_identifiable_without_leakage():
    # Ktrans = 0: the curve is vp Cp alone and says nothing about ve -> NaN with reason 2,
    # not a bound value; vp and Ktrans (~0, within its standard error) are still estimates
    rng = np.random.default_rng(7)
    ct = dce.extended_tofts(T_SYN, CP_SYN, 0.0, 0.3, 0.05) + rng.normal(0, 0.01, (40, T_SYN.size))
    got = dce.fit(T_SYN, ct, CP_SYN, "extended_tofts")
    nan_ve = np.isnan(got["ve"])
    assert nan_ve.mean() >= 0.9, got["ve"]
    assert np.all((got["reason"][nan_ve] & 2) == 2) and np.all(np.isnan(got["ve_se"][nan_ve]))
    assert _close(got["vp"], 0.05, 0.025, 0.0)
    assert np.all(np.abs(got["Ktrans"]) <= 2 * got["Ktrans_se"])   # consistent with 0
    # a 2CUM flow at the artificial upper bound is no estimate either
    got = dce.fit(T_SYN, dce.extended_tofts(T_SYN, CP_SYN, 0.1, 1e6, 0.05)[None], CP_SYN, "2cum")
    assert np.isnan(got["Fp"][0]) and got["reason"][0] & 4


@pytest.mark.parametrize("model, truth, delay", [
    ("extended_tofts", dict(Ktrans=0.25, ve=0.35, vp=0.05), False),
    ("2cum", dict(Fp=30.0, PS=0.1, vp=0.08), True),
])
def test_standard_errors_match_the_scatter_of_estimates(model, truth, delay):
    rng = np.random.default_rng(8)
    forward = {"extended_tofts": dce.extended_tofts, "2cum": dce.two_cum}[model]
    clean = forward(T_SYN, CP_SYN, **truth, delay_s=3.0 if delay else 0.0)
    got = dce.fit(T_SYN, clean + rng.normal(0, 0.02, (300, T_SYN.size)), CP_SYN, model,
                  fit_delay=delay)
    for key in list(truth) + (["delay_s"] if delay else []):
        ratio = np.median(got[f"{key}_se"]) / np.std(got[key])
        assert 0.8 < ratio < 1.25, (key, ratio)


def test_delayed_fit_costs_few_undelayed_fits(monkeypatch):
    """Work per voxel (exponential convolutions) of a delayed fit against an undelayed one
    on 120 OSIPI curves: <= 20x for the Tofts models (wall-clock:
    benchmarks/dce_fit_speed.py). Patlak, which has no convolution, is timed in
    test_delayed_patlak_cpu_time_within_20x_undelayed; the 2CXM and 2CUM, whose delayed
    fits are mostly not convolutions, in test_delayed_fit_cpu_time_within_3x_undelayed."""
    work = [0]
    convolve = dce.exp_convolve

    def counting(t, x, k, deriv=False):
        work[0] += np.size(k) * (2 if deriv else 1)   # the derivative doubles the recursion
        return convolve(t, x, k, deriv)

    monkeypatch.setattr(dce, "exp_convolve", counting)
    t = _arr(TCXM[0]["t"])
    ct = np.tile(np.stack([_arr(r["C_t"]) for r in TCXM]), (5, 1))
    for model, limit in (("tofts", 20), ("extended_tofts", 20)):
        cost = []
        for delay in (False, True):
            work[0] = 0
            dce.fit(t, ct, _arr(TCXM[0]["cp_aif"]), model, fit_delay=delay)
            cost.append(work[0])
        assert cost[1] <= limit * cost[0], (model, cost)


BENCHMARK_RANGES = {   # as benchmarks/dce_fit_speed.py: Fp [mL/100 mL/min], PS [1/min]
    "patlak": dict(PS=(0, 0.2), vp=(0.005, 0.1)),
    "2cxm": dict(Fp=(10, 80), PS=(0.02, 0.3), ve=(0.1, 0.5), vp=(0.02, 0.1)),
    "2cum": dict(Fp=(10, 80), PS=(0, 0.2), vp=(0.02, 0.1)),
}


def _benchmark_voxels(model, n, delayed, seed):
    """Curves of ``model`` over the ranges of benchmarks/dce_fit_speed.py (with ``delayed``,
    delays 0-8 s in 0.1 s groups), noise 0.02 mM, and the true delays [s]."""
    rng = np.random.default_rng(seed)
    truth = {k: rng.uniform(lo, hi, n) for k, (lo, hi) in BENCHMARK_RANGES[model].items()}
    delay = np.round(rng.uniform(0, 8, n), 1) if delayed else np.zeros(n)
    forward = {"patlak": dce.patlak, "2cxm": dce.two_cxm, "2cum": dce.two_cum}[model]
    ct = np.empty((n, T_SYN.size))
    for d in np.unique(delay):
        sel = delay == d
        ct[sel] = forward(T_SYN, CP_SYN, **{k: v[sel] for k, v in truth.items()}, delay_s=d)
    return ct + rng.normal(0, 0.02, ct.shape), delay


def _fastest_cpu_seconds(model):
    """CPU seconds of fitting 4096 ``_benchmark_voxels`` without and with the delay
    ({False: s, True: s}): runs alternate and the fastest of three counts, so a busy
    machine slows both. Also the last delayed fit and its true delays [s]."""
    plain, _ = _benchmark_voxels(model, 4096, False, seed=11)
    lagged, delay = _benchmark_voxels(model, 4096, True, seed=12)
    best = {}
    for _ in range(3):
        for data, fit_delay in ((plain, False), (lagged, True)):
            start = time.process_time()
            got = dce.fit(T_SYN, data, CP_SYN, model, fit_delay=fit_delay)
            seconds = time.process_time() - start
            best[fit_delay] = min(best.get(fit_delay, np.inf), seconds)
    return best, got, delay


def test_delayed_patlak_cpu_time_within_20x_undelayed():
    """The linear models' <= 20x delayed/undelayed cost for Patlak, which has no
    convolution to count (test_delayed_fit_costs_few_undelayed_fits): CPU time of 4096
    voxels as in test_delayed_fit_cpu_time_within_3x_undelayed. Measured at load 2-3 on
    2 cores: 5.3-5.5x."""
    best, _, _ = _fastest_cpu_seconds("patlak")
    assert best[True] <= 20.0 * best[False], best


@pytest.mark.parametrize("model", ["2cxm", "2cum"])
def test_delayed_fit_cpu_time_within_3x_undelayed(model):
    """Issue 6 point 8 for the 2CXM and 2CUM, measured as stated: CPU time per voxel of a
    vectorised fit of 4096 voxels with the delay against one without, <= 3x, with the
    delay found within 1 s where the data determine it (standard error <= 0.5 s: 57% of
    the 2CXM voxels, 66% of the 2CUM ones; 97% and 98% of them are within 1 s, and 89%
    and 92% of all voxels). Measured at load 4-6 on 2 cores: 2CXM 1.9-2.4x, 2CUM 2.0-2.1x
    (with both fits by variable projection and the undelayed ones about 1.5-2x faster than
    before; 2CUM 3.4-4.1x while its undelayed fit started from the rate grid alone)."""
    best, got, delay = _fastest_cpu_seconds(model)
    assert best[True] <= 3.0 * best[False], best
    determined = got["delay_s_se"] <= 0.5
    assert np.mean(determined) >= 0.5
    assert np.mean(np.abs(got["delay_s"] - delay)[determined] <= 1.0) >= 0.95


@pytest.mark.parametrize("name, rate_index, amplitudes", [("2cxm", (12, 5), (0.004, 0.001)),
                                                          ("2cum", (None, 12), (0.001, 0.004))])
def test_rate_grid_search_is_exact_for_rates_on_the_grid(name, rate_index, amplitudes):
    """Ct = A (Cp (x) K+) + B (Cp (x) K-) with grid rates (2CUM: K+ = 0) is recovered
    exactly: the best pair's parameters reproduce Ct through the public forward model."""
    grid = dce._RATE_GRID
    rates = [0.0 if i is None else grid[i] for i in rate_index]
    ct = sum(a * dce.exp_convolve(T_SYN, CP_SYN, [k])[0] for a, k in zip(amplitudes, rates))
    kp, km, a, b, _, _ = dce._rate_grid_search(name, T_SYN, CP_SYN, ct[None])
    p = dce._from_rates(name, kp, km, a, b)
    public = {key: p[0, i] * dce._TO_PUBLIC[key] for i, key in enumerate(dce._PARAMS[name])}
    forward = dce.two_cxm if name == "2cxm" else dce.two_cum
    np.testing.assert_allclose(forward(T_SYN, CP_SYN, **public), ct, rtol=0, atol=1e-12)


def test_high_flow_2cum_converges_in_few_iterations():
    """High flows (short Tp) are where the linear-form start is poor and LM crawled (48% of
    these voxels were more than 0.1% above their optimum after 10 iterations); from the
    rate-grid start 10 iterations reach the optimum."""
    rng = np.random.default_rng(5)
    n = 200
    truth = dict(Fp=rng.uniform(60, 90, n), PS=rng.uniform(0.05, 0.2, n),
                 vp=rng.uniform(0.02, 0.05, n))
    ct = dce.two_cum(T_SYN, CP_SYN, **truth) + rng.normal(0, 0.02, (n, T_SYN.size))
    few = dce.fit(T_SYN, ct, CP_SYN, "2cum", max_iter=10)["rss"]
    full = dce.fit(T_SYN, ct, CP_SYN, "2cum", max_iter=200)["rss"]
    assert np.mean((few - full) / full > 1e-3) <= 0.02


def test_nonnegative_two_column_lsq_matches_scipy_nnls():
    from scipy.optimize import nnls

    from hybrid.imaging._lsq import nonnegative_two_column_lsq
    rng = np.random.default_rng(13)
    u, v = rng.normal(size=(2, 200, 30))
    data = rng.normal(size=(200, 30))          # random signs: every active set occurs
    a, b, used, _ = nonnegative_two_column_lsq(u, v, data)
    ref = np.array([nnls(np.column_stack([u[i], v[i]]), data[i])[0] for i in range(200)])
    np.testing.assert_allclose(np.column_stack([a, b]), ref, atol=1e-12)
    assert np.any(used.all(axis=1)) and np.any(~used[:, 0]) and np.any(~used[:, 1])


def test_batched_varpro_recovers_separable_exponentials():
    """data = A exp(-t k) + B exp(-t (k + 1)) with A, B >= 0: (k, A, B) recovered per row from
    starts 30% off in k; B = 0 (one column in use; unique as k - 1 < 0.01) included."""
    from hybrid.imaging._lsq import batched_varpro
    t = np.linspace(0.0, 5.0, 60)
    k = np.array([0.3, 0.8, 1.5, 2.0])
    amp = np.array([[1.0, 2.0], [0.5, 0.0], [3.0, 1.0], [2.0, 0.5]])

    def basis(theta, rows):
        e1, e2 = np.exp(-t * theta[:, :1]), np.exp(-t * (theta[:, :1] + 1.0))
        return (e1, e2), ((-t * e1,), (-t * e2,))

    (u, v), _ = basis(k[:, None], None)
    data = amp[:, :1] * u + amp[:, 1:] * v
    theta, a, b, rss = batched_varpro(basis, data, 1.3 * k[:, None], [0.01], [10.0], 100, 1e-14)
    np.testing.assert_allclose(theta[:, 0], k, rtol=1e-6)
    np.testing.assert_allclose(np.column_stack([a, b]), amp, atol=1e-6)
    assert np.all(rss < 1e-12)


def test_delayed_2cum_with_a_one_value_delay_grid():
    ct = dce.two_cum(T_SYN, CP_SYN, [30.0, 60.0], [0.1, 0.05], [0.05, 0.08], delay_s=4.0)
    got = dce.fit(T_SYN, ct, CP_SYN, "2cum", fit_delay=True, delay_range_s=(4.0, 4.0))
    np.testing.assert_allclose(got["delay_s"], 4.0)
    np.testing.assert_allclose(got["Fp"], [30.0, 60.0], rtol=1e-4)
    np.testing.assert_allclose(got["vp"], [0.05, 0.08], rtol=1e-4)


@pytest.mark.parametrize("baseline", [0.0, 0.3])     # an AIF that is 0, or not, before arrival
def test_delayed_convolutions_equal_convolving_the_delayed_aif(baseline):
    """Windows of one convolution of the extended AIF equal the convolutions of each row's
    delayed AIF, with their derivatives in k and in the delay, on and between the knots
    and at both ends of the delay range; the same for int Cp_d."""
    cp = CP_SYN + baseline
    rng = np.random.default_rng(21)
    delays = np.concatenate([rng.uniform(-10, 10, 200), [-10.0, -2.0, 0.0, 2.0, 4.0, 10.0]])
    k = np.exp(rng.uniform(-9, 4, delays.size))
    convolve, integral = dce._delayed_convolutions(T_SYN, cp, (-10.0, 10.0))
    cp_d, slope = dce._shift_rows(T_SYN, cp, delays, deriv=True)
    expected = (*dce.exp_convolve(T_SYN, cp_d, k, deriv=True), dce.exp_convolve(T_SYN, slope, k),
                dce._cumtrapz(T_SYN, cp_d), dce._cumtrapz(T_SYN, slope))
    for got, ref in zip((*convolve(k, delays), *integral(delays)), expected):
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["2cum", "2cxm"])
@pytest.mark.parametrize("delayed", [False, True])
def test_separable_jacobian_matches_finite_differences_of_the_forward_model(name, delayed):
    """The 2CXM/2CUM Jacobian assembled from the variable-projection basis (refits and
    standard errors) and its J^T J equal central differences of the public forward model."""
    rng = np.random.default_rng(4)
    n = 12
    cols = [rng.uniform(10, 80, n) / 6000, rng.uniform(0.02, 0.3, n) / 60]
    cols += [rng.uniform(0.1, 0.5, n)] if name == "2cxm" else []
    cols += [rng.uniform(0.02, 0.1, n)] + ([rng.uniform(0, 8, n)] if delayed else [])
    p = np.column_stack(cols)
    forward = dce.two_cxm if name == "2cxm" else dce.two_cum
    names = dce._PARAMS[name]

    def public(q):          # one row of internal parameters through the public model
        values = {key: q[i] * dce._TO_PUBLIC[key] for i, key in enumerate(names)}
        return forward(T_SYN, CP_SYN, **values, delay_s=q[-1] if delayed else 0.0)

    basis = dce._impulse_basis(name, T_SYN, CP_SYN, (-10.0, 10.0) if delayed else None)
    f, jac = dce._separable_model_fn(name, basis, delayed)(p, jac=True)
    jtj = dce._separable_model(name, basis, p, delayed)[1]
    for row in range(n):
        np.testing.assert_allclose(f[row], public(p[row]), rtol=0, atol=1e-12)
        for i in range(p.shape[1]):
            h = 1e-6 * abs(p[row, i])
            up, down = p[row].copy(), p[row].copy()
            up[i] += h
            down[i] -= h
            ref = (public(up) - public(down)) / (2 * h)
            np.testing.assert_allclose(jac[row, :, i], ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    ref = jac.transpose(0, 2, 1) @ jac
    scale = np.sqrt(np.einsum("npp->np", ref))
    np.testing.assert_allclose(jtj / (scale[:, :, None] * scale[:, None, :]),
                               ref / (scale[:, :, None] * scale[:, None, :]), rtol=0, atol=1e-9)
