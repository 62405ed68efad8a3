"""Arterial input functions (AIFs) for DCE-MRI.

Times are in seconds, concentrations in mM. Population AIFs are arterial *blood* curves;
convert to plasma with :func:`plasma_aif` before kinetic fitting (vp and Ktrans scale with
1 - Hct if a blood curve is used as if it were plasma).
"""

import numpy as np

from hybrid.imaging.signal import signal_to_concentration

__all__ = ["parker_aif", "preclinical_aif", "plasma_aif", "measured_aif", "shift_aif",
           "POPULATION_AIFS", "population_plasma_aif", "plasma_aif_from_blood_signal"]

# Parker GJM et al., MRM 2006;56:993 (doi 10.1002/mrm.21066), Table 1: population-average
# whole-blood AIF; amplitudes in mM*min, times in min, alpha in mM, beta and s in 1/min.
_PARKER = dict(A1=0.809, A2=0.330, T1=0.17046, T2=0.365, sigma1=0.0563, sigma2=0.132,
               alpha=1.050, beta=0.1685, s=38.078, tau=0.483)

# McGrath DM, Bradley DP, Tessier JL, Lacey T, Taylor CJ, Parker GJM, "Comparison of
# model-based arterial input functions for dynamic contrast-enhanced MRI in tumor bearing
# rats", MRM 2009;61:1173-1184 (doi 10.1002/mrm.21959), Table 1 model B (Eq. 5): A in mM,
# k in 1/s, rise time t1 in s. These are the values of OSIPI's preclinical population AIF
# (OSIPI/DCE-DSC-MRI_CodeCollection, src/original/ST_USydAUS preclinicalAIF) and of its
# reference curves test/PopulationAIF_DCE/data/preclinicalAIF_ref.csv (column "Cb").
_MCGRATH_B = dict(A1=3.4, A2=1.81, k1=0.045, k2=0.0015, t1=7.0)


def _as_time(t_s):
    t = np.asarray(t_s, dtype=float)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError("t_s must be a non-empty 1-D array of finite times in seconds")
    return t


def parker_aif(t_s, delay_s=0.0):
    """Parker 2006 population AIF: whole-blood concentration [mM] at times ``t_s`` [s].

    ``delay_s`` [s] is the bolus arrival time: the curve is Cb(t - delay) for
    t >= delay and 0 before (OSIPI convention); with ``delay_s=0`` the curve keeps its
    small non-zero value at t = 0 (0.080 mM). Internally t is converted to minutes.
    Parameters: Parker 2006 Table 1 (A1 0.809, A2 0.330 mM min; T1 0.17046, T2 0.365,
    sigma1 0.0563, sigma2 0.132, tau 0.483 min; alpha 1.050 mM; beta 0.1685, s 38.078 1/min).
    """
    t = _as_time(t_s)
    p = _PARKER
    tm = (t - float(delay_s)) / 60.0
    cb = (p["A1"] / (p["sigma1"] * np.sqrt(2 * np.pi))
          * np.exp(-((tm - p["T1"]) ** 2) / (2 * p["sigma1"] ** 2))
          + p["A2"] / (p["sigma2"] * np.sqrt(2 * np.pi))
          * np.exp(-((tm - p["T2"]) ** 2) / (2 * p["sigma2"] ** 2))
          + p["alpha"] * np.exp(-p["beta"] * tm) / (1.0 + np.exp(-p["s"] * (tm - p["tau"]))))
    return np.where(tm >= 0.0, cb, 0.0)


def preclinical_aif(t_s, delay_s=0.0):
    """Rodent population AIF [mM] (McGrath 2009 model B, as in the OSIPI reference data).

    Linear rise from 0 to A1 + A2 = 5.21 mM over t1 = 7 s after arrival, then
    A1 exp(-k1 (t - t1)) + A2 exp(-k2 (t - t1)) with A1 = 3.4 mM, k1 = 0.045 1/s,
    A2 = 1.81 mM, k2 = 0.0015 1/s. Zero before ``delay_s`` [s]. Measured in rats (the
    usual population choice for mouse tumours too); taken here as a whole-blood curve,
    as OSIPI's reference labels it (Cb), so convert with ``plasma_aif``.
    """
    t = _as_time(t_s)
    p = _MCGRATH_B
    tau = t - float(delay_s)
    rise = (p["A1"] + p["A2"]) * tau / p["t1"]
    decay = (p["A1"] * np.exp(-p["k1"] * (tau - p["t1"]))
             + p["A2"] * np.exp(-p["k2"] * (tau - p["t1"])))
    return np.where(tau < 0.0, 0.0, np.where(tau <= p["t1"], rise, decay))


def plasma_aif(cb_mM, hct=0.42):
    """Plasma concentration Cp = Cb / (1 - Hct) [mM] from a whole-blood curve [mM]."""
    if not 0.0 <= hct < 1.0:
        raise ValueError(f"haematocrit must be in [0, 1), got {hct}")
    return np.asarray(cb_mM, dtype=float) / (1.0 - hct)


def measured_aif(conc_mM, mask):
    """Measured AIF [mM]: mean over the voxels in ``mask`` of a (..., n_t) array.

    ``mask`` has the spatial shape of ``conc_mM`` (all axes but the last). Voxels with
    non-finite samples are ignored; an empty usable mask raises ValueError.
    """
    conc = np.asarray(conc_mM, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if conc.ndim < 2 or mask.shape != conc.shape[:-1]:
        raise ValueError(f"mask shape {mask.shape} must equal the spatial shape "
                         f"{conc.shape[:-1]} of the (..., n_t) concentration array")
    curves = conc[mask]
    curves = curves[np.all(np.isfinite(curves), axis=-1)]
    if curves.shape[0] == 0:
        raise ValueError("AIF mask selects no voxel with finite data")
    return curves.mean(axis=0)


#: population AIFs by configuration name: whole-blood curve [mM] of (t [s], arrival [s])
POPULATION_AIFS = {"parker": parker_aif, "preclinical": preclinical_aif}


def population_plasma_aif(name, t_s, delay_s, hct):
    """Plasma AIF [mM] from the population AIF ``name`` (``POPULATION_AIFS``) arriving at
    ``delay_s`` [s], with haematocrit ``hct``."""
    if name not in POPULATION_AIFS:
        raise ValueError(f"unknown population AIF {name!r}; choose one of {sorted(POPULATION_AIFS)}")
    return plasma_aif(POPULATION_AIFS[name](t_s, delay_s), hct)


def plasma_aif_from_blood_signal(signal, mask, *, t10_s, r1_per_mM_s, tr_s, flip_angle_deg,
                                 n_baseline, hct):
    """Measured plasma AIF [mM]: the SPGR signal (..., n_t) averaged over the arterial ROI
    ``mask`` (spatial shape), converted to blood concentration with the blood T10 ``t10_s``
    [s] and relaxivity ``r1_per_mM_s`` [1/(mM s)] (see ``signal_to_concentration``), then
    to plasma with haematocrit ``hct``. Raises ValueError where the mean arterial signal
    has no physical concentration (e.g. saturated, or a T10 or flip angle that is wrong).
    """
    mean = measured_aif(signal, mask)
    cb = signal_to_concentration(mean, t10_s=t10_s, r1_per_mM_s=r1_per_mM_s, tr_s=tr_s,
                                 flip_angle_deg=flip_angle_deg, n_baseline=n_baseline)
    bad = np.flatnonzero(~np.isfinite(cb))
    if bad.size:
        raise ValueError(f"the mean arterial signal of the AIF mask cannot be converted to a "
                         f"concentration at {bad.size} frame(s) (first: frame {bad[0]}): it "
                         f"exceeds the SPGR maximum or is not positive; check the blood T10 "
                         f"({t10_s} s), the flip angle and TR, or draw the ROI away from "
                         f"inflow and partial-volume voxels")
    return plasma_aif(cb, hct)


def shift_aif(t_s, c_mM, delay_s):
    """AIF delayed by ``delay_s`` [s] (any sign), by linear interpolation on ``t_s``.

    Values before the first sample hold c[0]; values after the last hold c[-1].
    """
    t = _as_time(t_s)
    return np.interp(t - float(delay_s), t, np.asarray(c_mM, dtype=float))
