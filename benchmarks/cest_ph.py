"""Accuracy of iopamidol CEST pH: measured spectra (issue 6 item 10) and the simulated-phantom bias
when the calibration was made under other conditions (item 11).

1. Measured: the 28 raw Z-spectra of 25 mM iopamidol phantoms in tests/data/acidocest
   (37 C, 3 uT, 6 s, pH 6.22-7.32, four water-T1 series), fitted with and without the 100 ppm
   reference: fit success, residual RMS, water centre, finite ratios for every ratio method, and
   pH calibrations (degree by leave-one-out): per T1 series over the full range, pooled over the
   three series with T1 <= 1.4 s (full range and the pH-sensitive range pH >= 6.8), over the
   long-T1 (3.4 s) series pH 6.23-7.28 (with the Box3 vials), and a transfer test (calibrate on
   the T1 = 1.4 s series, read the two other series).
   Two powers, per T1 series (eight vials each, pH 6.2-7.3, 2 and 3 uT, the same vials, no
   reference), over the full range and over pH >= 6.5 (below it both amides saturate): for every
   candidate index the leave-one-out error (degree by leave-one-out), the nested leave-one-out
   error (degree chosen again without each vial), the noise floor (SD of the index over refits
   of the jointly fitted spectra with their measured noise added, divided by the calibration
   slope, pH), and the nested error of choosing among all candidates; the same calibrations
   pooled over the four series (32 vials); the simulated slope of the ST and B1 ratios.
   Candidates, fixed before measuring: the three ratio methods at each power from separate fits
   and from the joint fit with shared line centres (``cest.fit_zspectra_joint``), the mean of the
   two powers' ST ratios (both fits; the joint-fit mean was the pre-registered primary index),
   and the B1-ratiometric index at 4.2 and 5.6 ppm (``cest.b1_ratio``, both fits). Added later,
   also fixed before measuring: the mean ST ratio of the joint fit with each power's residuals
   weighted by its off-resonance noise (``cest.mean_ph_ratio``, the index ``hybrid maps`` uses
   for two powers), and, for it, two regularised calibration shapes beside the polynomial
   (degree by leave-one-out): isotonic regression of pH on the index (pool-adjacent-violators,
   linear interpolation, flat beyond the ends) and the inverse of a linear index(pH) fit.
2. Simulated: calibrate on noiseless Bloch-McConnell vials (9.4 T, 3 uT, 6 s, 30 mM, water
   T1 2.5 s / T2 0.5 s, MT 5 %), then read noiseless spectra simulated with one setting changed
   (water T2, concentration, B0, B1): bias = recovered - true pH at pH 6.3-7.2.

Writes benchmarks/results/cest_ph.json and prints the tables. Takes about three minutes on two
cores (load 8).
"""

import argparse
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from hybrid.imaging import bloch_mcconnell as bm
from hybrid.imaging import cest
from hybrid.io.zspectra import read_zspectra_csv

ROOT = Path(__file__).resolve().parents[1]
MEASURED_CSV = ROOT / "tests" / "data" / "acidocest" / "Box4_37C_SatP3SatT6002.csv"
LOW_PH_CSV = MEASURED_CSV.with_name("Box3_37C_SatP3SatT6002_25mM_T1_3.4s.csv")   # T1 3.4 s, pH 6.23-6.67
POWERS_UT = (2, 3)   # saturation powers with measured files for the same vials (tests/data/acidocest)
NOISE_REPLICATES = 50
WEIGHTED = "joint 2+3 uT mean st, noise-weighted"
"""The two-power index of ``hybrid maps`` (``cest.mean_ph_ratio``, noise-weighted joint fit)."""
OFFSETS = np.round(np.arange(-10.0, 10.001, 0.1), 3)
CALIBRATION = dict(concentration=0.030, water=bm.WaterPool(t1=2.5, t2=0.5), mt=bm.MTPool(fraction=0.05),
                   b0=9.4, b1=3.0e-6, t_sat=6.0)
CHANGES = {"water T2": ("water", {0.2: bm.WaterPool(2.5, 0.2), 0.1: bm.WaterPool(2.5, 0.1),
                                  0.05: bm.WaterPool(2.5, 0.05)}, "s"),
           "concentration": ("concentration", {15: 0.015, 60: 0.060}, "mM"),
           "B0": ("b0", {7.0: 7.0, 11.7: 11.7}, "T"),
           "B1": ("b1", {2.5: 2.5e-6, 3.5: 3.5e-6}, "uT")}


def calibration_entry(ratio, ph):
    if not np.all(np.isfinite(ratio)):
        return {"n": int(ratio.size), "error": "non-finite ratios"}
    cal = cest.PhCalibration.fit(ratio, ph)
    return {"n": int(ratio.size), "degree": cal.degree, "loo_rms_ph": cal.loo_rms_ph,
            "loo_rms_by_degree": {str(d): (v if np.isfinite(v) else None) for d, v in cal.loo_rms_by_degree.items()}}


def measured_report():
    out = {}
    for reference in (True, False):
        offsets, ph, t1, signal = read_zspectra_csv(MEASURED_CSV, keep_reference=reference)
        fit = cest.fit_zspectrum(offsets, signal)
        entry = {"fits_succeeded": int(fit.success.sum()), "spectra": int(ph.size),
                 "rms_min": float(np.nanmin(fit.rms)), "rms_max": float(np.nanmax(fit.rms)),
                 "water_centre_ppm_min": float(np.nanmin(fit.b0_shift_ppm)),
                 "water_centre_ppm_max": float(np.nanmax(fit.b0_shift_ppm)), "methods": {}}
        for method in cest.RATIO_METHODS:
            ratio = cest.ph_ratio(offsets, signal, method=method)
            series = {f"T1 {t:g} s": calibration_entry(ratio[t1 == t], ph[t1 == t]) for t in np.unique(t1)}
            pooled = t1 <= 1.4
            sensitive = pooled & (ph >= 6.8)
            train = (t1 == 1.4) & (ph >= 6.8)
            test = (t1 < 1.4) & (ph >= 6.8)
            transfer = cest.PhCalibration.fit(ratio[train], ph[train]).ph(ratio[test]) - ph[test]
            low = read_zspectra_csv(LOW_PH_CSV, keep_reference=reference)
            long_t1 = np.concatenate([cest.ph_ratio(offsets, low[3], method=method), ratio[t1 == 3.4]])
            entry["methods"][method] = {
                "finite_ratios": int(np.isfinite(ratio).sum()),
                "ratio": [float(r) for r in ratio], "pH": ph.tolist(), "T1_s": t1.tolist(),
                "per_series_full_range": series,
                "pooled_T1_le_1.4_full_range": calibration_entry(ratio[pooled], ph[pooled]),
                "pooled_T1_le_1.4_pH_ge_6.8": calibration_entry(ratio[sensitive], ph[sensitive]),
                "T1_3.4_series_pH_6.23_7.28": calibration_entry(long_t1, np.concatenate([low[1], ph[t1 == 3.4]])),
                "transfer_T1_1.4_to_others_pH_ge_6.8": {
                    "rms_ph": float(np.sqrt(np.nanmean(transfer ** 2))), "max_abs_ph": float(np.nanmax(np.abs(transfer))),
                    "inside_calibration": int(np.isfinite(transfer).sum()), "n": int(transfer.size)}}
        out["with_100ppm_reference" if reference else "without_reference"] = entry
    return out


def power_files(power_ut):
    """(Box4 file with all four T1 series, Box3 file with the 3.4 s vials pH 6.23-6.67) at power_ut."""
    return (MEASURED_CSV.with_name(f"Box4_37C_SatP{power_ut}SatT6002.csv"),
            MEASURED_CSV.with_name(f"Box3_37C_SatP{power_ut}SatT6002_25mM_T1_3.4s.csv"))


def t1_series(power_ut):
    """Offsets and {T1 label: (pH, raw spectra without reference)} of the four 25 mM series of eight
    vials at power_ut: T1 3.4 s (Box3 pH 6.23-6.67 + Box4 pH 6.82-7.28), 1.4, 0.86 and 0.6 s (Box4)."""
    box4, box3 = power_files(power_ut)
    offsets, ph, t1, signal = read_zspectra_csv(box4, keep_reference=False)
    _, ph_low, _, signal_low = read_zspectra_csv(box3, keep_reference=False)
    series = {"T1 3.4 s": (np.concatenate([ph_low, ph[t1 == 3.4]]), np.concatenate([signal_low, signal[t1 == 3.4]]))}
    series.update({f"T1 {t:g} s": (ph[t1 == t], signal[t1 == t]) for t in (1.4, 0.86, 0.6)})
    return offsets, series


def model_spectra(offsets, fit):
    """Fitted Lorentzian spectra relative to the fitted baseline (spectra without reference)."""
    x = offsets[None, None, :]
    lines = cest._lorentz(x, fit.amplitude[..., None], fit.width_ppm[..., None], fit.centre_ppm[..., None])
    return 1.0 - lines.sum(axis=-2)


def candidates(offsets, z_low, z_high):
    """Every pH index of the pre-registered comparison from the 2 uT (z_low) and 3 uT (z_high)
    spectra of the same vials: per power and ratio method from separate fits and from the joint
    (shared-centre) fit, the mean of the two powers' ST ratios, and the B1 ratio at each amide;
    and the mean ST ratio of the noise-weighted joint fit (``WEIGHTED``)."""
    separate = [cest.fit_zspectrum(offsets, z) for z in (z_low, z_high)]
    joint = cest.fit_zspectra_joint(offsets, (z_low, z_high))
    out = {}
    for prefix, fits in (("", separate), ("joint ", joint)):
        for method in cest.RATIO_METHODS:
            for power, z, fit in zip(POWERS_UT, (z_low, z_high), fits):
                out[f"{prefix}{power} uT {method}"] = cest.ph_ratio(offsets, z, method=method, fit=fit)
        out[f"{prefix}2+3 uT mean st"] = cest.mean_ph_ratio(offsets, (z_low, z_high), fits=fits)
        for at in (4.2, 5.6):
            out[f"{prefix}B1 ratio {at} ppm"] = cest.b1_ratio(offsets, z_low, z_high, at_ppm=at, fits=fits)
    out[WEIGHTED] = cest.mean_ph_ratio(offsets, (z_low, z_high), noise_weighted=True)
    return out


def loo_entry(ratio, ph):
    """Leave-one-out error of the calibration (degree by leave-one-out), the nested leave-one-out
    error with the degree chosen again without each vial, and the leave-one-out error of the
    linear calibration (no choice made; NaN where it is not monotone) (pH)."""
    if not np.all(np.isfinite(ratio)):
        return {"n": int(ratio.size), "error": "non-finite ratios"}
    try:
        choice = cest.select_calibration({"index": ratio}, ph)
    except ValueError as exc:
        return {"n": int(ratio.size), "error": str(exc)}
    linear = choice.calibration.loo_rms_by_degree.get(1, np.nan)
    return {"n": int(ratio.size), "degree": choice.calibration.degree, "loo_rms_ph": choice.calibration.loo_rms_ph,
            "nested_loo_rms_ph": choice.nested_loo_rms_ph, "linear_loo_rms_ph": linear if np.isfinite(linear) else None}


def _isotonic(x, y):
    """Non-decreasing least-squares fit of y over increasing x (pool-adjacent-violators):
    (sorted x, fitted y)."""
    blocks = []
    for value in y[np.argsort(x)]:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (v2, n2), (v1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(v1 * n1 + v2 * n2) / (n1 + n2), n1 + n2])
    return np.sort(x), np.concatenate([[v] * n for v, n in blocks])


def calibration_shapes(ratio, ph):
    """Leave-one-out error (pH) of three calibration shapes of one index: the polynomial of
    ``cest.PhCalibration`` (degree by leave-one-out), isotonic pH(index) (``_isotonic``, linear
    interpolation, flat beyond the ends, oriented by the sign of the linear slope) and the
    inverse of a linear index(pH) fit (classical calibration)."""
    if not np.all(np.isfinite(ratio)):
        return {"error": "non-finite ratios"}
    sign = np.sign(np.polyfit(ph, ratio, 1)[0])
    iso, inverse = [], []
    for i in range(ph.size):
        keep = np.arange(ph.size) != i
        knots, fitted = _isotonic(sign * ratio[keep], ph[keep])
        iso.append(np.interp(sign * ratio[i], knots, fitted) - ph[i])
        slope, intercept = np.polyfit(ph[keep], ratio[keep], 1)
        inverse.append((ratio[i] - intercept) / slope - ph[i])
    return {"polynomial": cest.PhCalibration.fit(ratio, ph).loo_rms_ph,
            "isotonic": float(np.sqrt(np.mean(np.square(iso)))),
            "inverse linear": float(np.sqrt(np.mean(np.square(inverse))))}


def index_noise_sd(offsets, z_low, z_high, rng):
    """Per candidate and vial: SD of the index over NOISE_REPLICATES refits of the jointly fitted
    spectra plus Gaussian noise of each spectrum's measured SD (index units)."""
    keep = np.abs(offsets) < 15.0
    noisy = [model_spectra(offsets[keep], fit)
             + rng.standard_normal((NOISE_REPLICATES,) + z.shape[:-1] + (int(keep.sum()),))
             * cest.off_resonance_noise_sd(offsets, z)[:, None]
             for fit, z in zip(cest.fit_zspectra_joint(offsets, (z_low, z_high)), (z_low, z_high))]
    return {name: np.nanstd(r, axis=0) for name, r in candidates(offsets[keep], *noisy).items()}


def noise_floor_ph(sd, ratio, ph):
    """Noise floor of an index (pH): RMS over the vials of its noise SD divided by the slope of its
    linear fit against pH on the measured vials; None where a ratio is non-finite."""
    if not (np.all(np.isfinite(ratio)) and np.all(np.isfinite(sd))):
        return None
    return float(np.sqrt(np.mean(sd ** 2)) / abs(np.polyfit(ph, ratio, 1)[0]))


def two_power_report():
    """Per T1 series (eight vials, 2 and 3 uT, no reference) and pH range: leave-one-out and nested
    leave-one-out error of every candidate, the nested error of choosing among all of them, the
    noise floor, and the same calibrations pooled over the four series (32 vials)."""
    rng = np.random.default_rng(0)
    (offsets, low), (_, high) = t1_series(2), t1_series(3)
    out, pooled = {"pH_ranges": {"full": "6.2-7.3", "pH >= 6.5": "6.5-7.3"}, "series": {}}, {}
    for label, (ph, z_low) in low.items():
        z_high = high[label][1]
        ratios = candidates(offsets, z_low, z_high)
        entry = {"pH": ph.tolist(), "noise_sd": {f"{p} uT": cest.off_resonance_noise_sd(offsets, z).tolist()
                                                 for p, z in zip(POWERS_UT, (z_low, z_high))},
                 "ratio": {n: r.tolist() for n, r in ratios.items()}}
        sd = index_noise_sd(offsets, z_low, z_high, rng)
        for name, keep in (("full", np.ones(ph.size, bool)), ("pH >= 6.5", ph >= 6.5)):
            usable = {n: r[keep] for n, r in ratios.items()}
            entry[name] = {n: {**loo_entry(r, ph[keep]), "noise_floor_ph": noise_floor_ph(sd[n][keep], r, ph[keep])}
                           for n, r in usable.items()}
            entry[name]["calibration shapes, " + WEIGHTED] = calibration_shapes(usable[WEIGHTED], ph[keep])
            choice = cest.select_calibration(usable, ph[keep])
            entry[name]["choose among all"] = {"chosen": choice.name, "degree": choice.calibration.degree,
                                               "loo_rms_ph": choice.calibration.loo_rms_ph,
                                               "nested_loo_rms_ph": choice.nested_loo_rms_ph,
                                               "nested_choices": list(choice.nested_choices)}
        out["series"][label] = entry
        for n, r in ratios.items():
            pooled.setdefault(n, []).append(r)
    ph_all = np.concatenate([low[label][0] for label in low])
    out["pooled_four_series"] = {n: loo_entry(np.concatenate(r), ph_all) for n, r in pooled.items()}
    sim_ph = np.round(np.arange(6.0, 7.41, 0.1), 2)
    simulated = {f"{p} uT": bm.simulate_iopamidol(OFFSETS, sim_ph, concentration=0.025, b0=9.4, b1=p * 1e-6,
                                                  water=bm.WaterPool(t1=3.4, t2=0.5), t_sat=6.0)
                 for p in POWERS_UT}     # Bloch-McConnell, 25 mM, water T1 3.4 s / T2 0.5 s, 9.4 T, 6 s, no MT
    slopes = {"pH": sim_ph[:-1].tolist()}
    for p, z in simulated.items():
        slopes[f"{p} st"] = np.diff(cest.ph_ratio(OFFSETS, z, method="st")) / np.diff(sim_ph)
    for at in (4.2, 5.6):
        slopes[f"B1 ratio {at} ppm"] = np.diff(cest.b1_ratio(OFFSETS, *simulated.values(), at_ppm=at)) / np.diff(sim_ph)
    out["simulated_slope_per_pH"] = {k: v if k == "pH" else v.tolist() for k, v in slopes.items()}
    return out


def bias_report():
    cal_ph = np.round(np.arange(6.2, 7.31, 0.1), 2)
    ph = np.round(np.arange(6.3, 7.21, 0.15), 2)
    out = {"pH": ph.tolist(), "calibration": {"pH": cal_ph.tolist(), "concentration_M": 0.030, "water_T1_s": 2.5,
                                               "water_T2_s": 0.5, "b0_T": 9.4, "b1_T": 3.0e-6, "t_sat_s": 6.0,
                                               "mt_fraction": 0.05}, "methods": {}}
    for method in ("amplitude", "st"):
        vials = bm.simulate_iopamidol(OFFSETS, cal_ph, **CALIBRATION)
        cal = cest.PhCalibration.fit(cest.ph_ratio(OFFSETS, vials, method=method), cal_ph)
        rows = {}
        conditions = [("same settings", None, None, None)] + [
            (f"{name} {value:g} {unit}", key, value, setting)
            for name, (key, values, unit) in CHANGES.items() for value, setting in values.items()]
        for label, key, _, setting in conditions:
            settings = dict(CALIBRATION) if key is None else {**CALIBRATION, key: setting}
            est = cal.ph(cest.ph_ratio(OFFSETS, bm.simulate_iopamidol(OFFSETS, ph, **settings), method=method))
            bias = est - ph
            rows[label] = {"bias_ph": [None if np.isnan(b) else float(b) for b in bias],
                           "max_abs_bias_ph": float(np.nanmax(np.abs(bias))),
                           "outside_calibration": int(np.isnan(bias).sum())}
        out["methods"][method] = {"calibration_degree": cal.degree, "calibration_loo_rms_ph": cal.loo_rms_ph,
                                  "conditions": rows}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "cest_ph.json")
    args = parser.parse_args()
    t0 = time.perf_counter()
    report = {"benchmark": "cest_ph",
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "load_average": os.getloadavg()},
              "versions": {d: metadata.version(d) for d in ("hybrid", "numpy", "scipy")},
              "measured": measured_report(), "two_powers": two_power_report(),
              "simulated_bias": bias_report()}
    report["wall_time_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    for key, entry in report["measured"].items():
        print(f"measured, {key}: {entry['fits_succeeded']}/{entry['spectra']} fits, residual RMS "
              f"{entry['rms_min']:.4f}-{entry['rms_max']:.4f}, water centre {entry['water_centre_ppm_min']:+.2f}"
              f" to {entry['water_centre_ppm_max']:+.2f} ppm")
        for method, m in entry["methods"].items():
            full, sens = m["pooled_T1_le_1.4_full_range"], m["pooled_T1_le_1.4_pH_ge_6.8"]
            tr = m["transfer_T1_1.4_to_others_pH_ge_6.8"]
            long_t1 = m["T1_3.4_series_pH_6.23_7.28"]
            print(f"  {method:9s} finite {m['finite_ratios']}/{entry['spectra']}; leave-one-out pH 6.2-7.3: "
                  f"{full.get('loo_rms_ph', float('nan')):.3f} (deg {full.get('degree')}), pH >= 6.8: "
                  f"{sens.get('loo_rms_ph', float('nan')):.3f} (deg {sens.get('degree')}); transfer RMS "
                  f"{tr['rms_ph']:.3f}; T1 3.4 s series pH 6.23-7.28: {long_t1.get('loo_rms_ph', float('nan')):.3f}"
                  f"; per series " + ", ".join(
                      f"{s}: {v.get('loo_rms_ph', float('nan')):.3f}" for s, v in m["per_series_full_range"].items()))
    two = report["two_powers"]

    def cell(v):
        if "degree" not in v:
            return "non-finite"
        linear = "  -  " if v["linear_loo_rms_ph"] is None else f"{v['linear_loo_rms_ph']:.3f}"
        return f"{v['loo_rms_ph']:.3f}/{v['nested_loo_rms_ph']:.3f}/{linear} d{v['degree']}"
    for span_name, span in two["pH_ranges"].items():
        print(f"per T1 series, pH {span}, 2 and 3 uT, no reference: leave-one-out / nested leave-one-out / linear "
              "leave-one-out [pH] (degree); last column: noise floor [pH] per series")
        print(f"  {'index':38s}" + "".join(f"{label:>26s}" for label in two["series"]) + "  noise floor")
        for name in two["series"]["T1 3.4 s"]["ratio"]:
            floors = " ".join("  -  " if e[span_name][name]["noise_floor_ph"] is None
                              else f"{e[span_name][name]['noise_floor_ph']:.3f}" for e in two["series"].values())
            print(f"  {name:38s}" + "".join(f"{cell(e[span_name][name]):>26s}" for e in two["series"].values())
                  + f"  {floors}")
        shapes = [e[span_name]["calibration shapes, " + WEIGHTED] for e in two["series"].values()]
        for shape in ("polynomial", "isotonic", "inverse linear"):
            print(f"  {'calibration ' + shape + ', leave-one-out':38s}" + "".join(
                f"{v.get(shape, float('nan')):26.3f}" for v in shapes))
        print(f"  {'choose among all':38s}" + "".join(
            f"{e[span_name]['choose among all']['loo_rms_ph']:.3f}/{e[span_name]['choose among all']['nested_loo_rms_ph']:.3f}".rjust(26)
            for e in two["series"].values()) + "   chosen: " + ", ".join(
            e[span_name]["choose among all"]["chosen"] for e in two["series"].values()))
    print("pooled over the four series (32 vials, pH 6.2-7.3): " + ", ".join(
        f"{n} {cell(v)}" for n, v in two["pooled_four_series"].items()))
    slope = two["simulated_slope_per_pH"]
    print(f"simulated index slope [1/pH] from pH {slope['pH']}:")
    for name, values in slope.items():
        if name != "pH":
            print(f"  {name:18s} " + " ".join(f"{v:+.2f}" for v in values))
    bias = report["simulated_bias"]
    print(f"simulated bias [pH] at pH {bias['pH']}")
    for method, m in bias["methods"].items():
        print(f"  {method} (calibration degree {m['calibration_degree']}, leave-one-out "
              f"{m['calibration_loo_rms_ph']:.3f})")
        for label, row in m["conditions"].items():
            values = " ".join("  nan " if b is None else f"{b:+.3f}" for b in row["bias_ph"])
            print(f"    {label:22s} {values}   max |bias| {row['max_abs_bias_ph']:.3f}")
    print(f"wrote {args.out} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
