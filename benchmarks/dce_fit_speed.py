"""Speed and accuracy of voxel-wise extended-Tofts fitting: hybrid vs dcmri vs osipy.

Synthetic 128 x 128 x 16 volume, 60 frames at 5 s, Parker plasma AIF (Hct 0.42, arrival
30 s), uniform random truth Ktrans 0.02-0.5 /min, ve 0.1-0.6, vp 0.005-0.1, Gaussian noise
0.02 mM on the tissue concentration (seeded). hybrid fits the whole volume; the peers,
which are slower, fit a random subset of voxels and their voxels/s is extrapolated.
Writes benchmarks/results/dce_fit_speed.json. ``--smoke`` runs a tiny volume.
"""

import argparse
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from hybrid.imaging import dce

HCT = 0.42
T10_S, R1_PER_MM_S, TR_S, FA_DEG, S0 = 1.0, 4.5, 0.005, 15.0, 1000.0   # dcmri signal model
TOL = {"Ktrans": (0.005, 0.1), "ve": (0.05, 0.0), "vp": (0.025, 0.0)}  # OSIPI atol, rtol


def synthetic(shape, n_t, dt_s, noise_mM, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n_t) * dt_s
    cp = dce.plasma_aif(dce.parker_aif(t, delay_s=30.0), hct=HCT)
    truth = {"Ktrans": rng.uniform(0.02, 0.5, shape), "ve": rng.uniform(0.1, 0.6, shape),
             "vp": rng.uniform(0.005, 0.1, shape)}
    ct = dce.extended_tofts(t, cp, truth["Ktrans"], truth["ve"], truth["vp"])
    return t, cp, ct + rng.normal(0.0, noise_mM, ct.shape), truth, rng


def accuracy(est, truth):
    out = {}
    for k, (atol, rtol) in TOL.items():
        e, r = np.ravel(est[k]), np.ravel(truth[k])
        ok = np.abs(e - r) <= atol + rtol * np.abs(r)
        out[k] = {"median_abs_error": float(np.nanmedian(np.abs(e - r))),
                  "osipi_pass_fraction": float(np.mean(ok))}
    return out


def timed(fn):
    t0 = time.perf_counter()
    res = fn()
    return res, time.perf_counter() - t0


def run_hybrid(t, cp, ct):
    res, sec = timed(lambda: dce.fit(t, ct, cp, "extended_tofts"))
    return res, sec


def run_osipy(t, cp, ct):
    import osipy
    res, sec = timed(lambda: osipy.fit_model("extended_tofts", ct[:, None, None, :], cp, t))
    return {k: res.parameter_maps[k].values.ravel() for k in TOL}, sec  # Ktrans in 1/min


def run_dcmri(t, cp, ct):
    import dcmri
    sig = dce.spgr_signal(S0, 1.0 / T10_S + R1_PER_MM_S * ct, TR_S, FA_DEG)
    tissue = dcmri.TissueArray(
        (ct.shape[0],), kinetics="HF", water_exchange="FF", sequence="SS",
        ca=cp * (1.0 - HCT) / 1000.0, t=t,            # dcmri: blood concentration in M
        r1=R1_PER_MM_S * 1000.0, TR=TR_S, FA=FA_DEG, R10=1.0 / T10_S, n0=6, H=HCT)
    _, sec = timed(lambda: tissue.train(t, sig))
    p = tissue.export_params()
    # 'HF' = extended Tofts: Ktrans = PS [mL/s/mL -> 1/min], ve = vi, vp = (1 - H) vb
    return {"Ktrans": p["PS"][1] * 60.0, "ve": p["vi"][1], "vp": p["vp"][1]}, sec


def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny volume (8 x 8 x 2)")
    ap.add_argument("--osipy-voxels", type=int, default=16384)
    ap.add_argument("--dcmri-voxels", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "dce_fit_speed.json")
    args = ap.parse_args(argv)
    shape = (8, 8, 2) if args.smoke else (128, 128, 16)
    n_t, dt_s, noise = 60, 5.0, 0.02
    t, cp, ct, truth, rng = synthetic(shape, n_t, dt_s, noise, args.seed)
    n_vox = int(np.prod(shape))

    res, sec = run_hybrid(t, cp, ct)
    results = {"hybrid": {
        "status": "ok", "voxels_fitted": n_vox, "seconds": sec, "voxels_per_s": n_vox / sec,
        "seconds_full_volume": sec, "extrapolated": False,
        "method": "Murase LLSQ start + batched Levenberg-Marquardt over all voxels (numpy)",
        "accuracy": accuracy(res, truth)}}

    flat_ct = ct.reshape(-1, n_t)
    flat_truth = {k: v.ravel() for k, v in truth.items()}
    flat_res = {k: res[k].ravel() for k in TOL}
    peers = {"osipy": (run_osipy, args.osipy_voxels,
                       "osipy.fit_model('extended_tofts', C, aif, t), default LM fitter, "
                       "concentration input"),
             "dcmri": (run_dcmri, args.dcmri_voxels,
                       "dcmri.TissueArray(kinetics='HF', sequence='SS').train(t, signal): "
                       "fits SPGR signals (no concentration fitter), so the noisy "
                       f"concentrations were converted with T10 {T10_S} s, r1 {R1_PER_MM_S} "
                       f"/mM/s, TR {TR_S} s, FA {FA_DEG} deg, S0 {S0}; one scipy "
                       "curve_fit per voxel, parallel=False")}
    for name, (fn, n_sub, how) in peers.items():
        sub = np.sort(rng.choice(n_vox, size=min(n_sub, n_vox), replace=False))
        try:
            est, psec = fn(t, cp, flat_ct[sub])
        except ImportError as exc:
            results[name] = {"status": "skipped", "reason": f"not installed ({exc}); "
                             "pip install dcmri osipy"}
            print(f"{name}: skipped, not installed")
            continue
        sub_truth = {k: v[sub] for k, v in flat_truth.items()}
        results[name] = {
            "status": "ok", "voxels_fitted": int(sub.size), "seconds": psec,
            "voxels_per_s": sub.size / psec, "seconds_full_volume": n_vox * psec / sub.size,
            "extrapolated": sub.size < n_vox, "method": how,
            "accuracy": accuracy(est, sub_truth),
            "hybrid_accuracy_same_voxels": accuracy({k: v[sub] for k, v in flat_res.items()},
                                                    sub_truth)}

    report = {
        "benchmark": "dce_fit_speed", "model": "extended_tofts", "shape": list(shape),
        "n_t": n_t, "dt_s": dt_s, "noise_sd_mM": noise, "seed": args.seed,
        "aif": f"Parker 2006 population AIF, arrival 30 s, plasma (Hct {HCT})",
        "truth_ranges": {"Ktrans_per_min": [0.02, 0.5], "ve": [0.1, 0.6], "vp": [0.005, 0.1]},
        "osipi_tolerances": {k: {"atol": a, "rtol": r} for k, (a, r) in TOL.items()},
        "units": {"seconds": "s wall clock", "voxels_per_s": "1/s",
                  "median_abs_error": "Ktrans 1/min; ve, vp dimensionless"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "versions": {d: version(d) for d in ("hybrid", "numpy", "scipy", "osipy", "dcmri")},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        if r["status"] == "ok":
            acc = ", ".join(f"{k} {v['median_abs_error']:.4f}" for k, v in r["accuracy"].items())
            note = " (extrapolated)" if r["extrapolated"] else ""
            print(f"{name:7s} {r['voxels_per_s']:10.0f} voxels/s  full volume "
                  f"{r['seconds_full_volume']:8.1f} s{note}  median |error|: {acc}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
