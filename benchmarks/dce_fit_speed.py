"""Speed and accuracy of voxel-wise DCE fitting, every model with and without an arterial
delay: hybrid vs osipy vs dcmri, in the same run.

Per model (tofts, extended_tofts, patlak, 2cxm, 2cum) a synthetic volume (default
64 x 64 x 4) is made with that model: 150 frames at 2 s, Parker plasma AIF (Hct 0.42,
arrival 30 s), uniform random truth per voxel (``TRUTH``), Gaussian noise 0.02 mM on the
tissue concentration (seeded). The delayed case uses the same truth with a per-voxel
arterial delay drawn from 0-8 s, fitted with ``fit_delay``. hybrid fits the whole volume;
the slower peers fit a random subset of voxels and their voxels/s is extrapolated.
Accuracy: median absolute error and the fraction of voxels within the OSIPI tolerances
(``TOL``), for the peer and for hybrid on the same voxels. Writes
benchmarks/results/dce_fit_speed.json. ``--smoke`` runs a tiny volume.
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
N_T, DT_S, NOISE_MM = 150, 2.0, 0.02
DELAYS_S = (0.0, 8.0)                                # true per-voxel delays, delayed case
T10_S, R1_PER_MM_S, TR_S, FA_DEG, S0 = 1.0, 4.5, 0.005, 15.0, 1000.0   # dcmri signal model
TRUTH = {   # uniform ranges; Ktrans, PS [1/min], Fp [mL/100 mL/min], ve, vp [-]
    "tofts": {"Ktrans": (0.02, 0.5), "ve": (0.1, 0.6)},
    "extended_tofts": {"Ktrans": (0.02, 0.5), "ve": (0.1, 0.6), "vp": (0.005, 0.1)},
    "patlak": {"PS": (0.0, 0.2), "vp": (0.005, 0.1)},
    "2cxm": {"Fp": (10.0, 80.0), "PS": (0.02, 0.3), "ve": (0.1, 0.5), "vp": (0.02, 0.1)},
    "2cum": {"Fp": (10.0, 80.0), "PS": (0.0, 0.2), "vp": (0.02, 0.1)},
}
FORWARD = {"tofts": dce.tofts, "extended_tofts": dce.extended_tofts, "patlak": dce.patlak,
           "2cxm": dce.two_cxm, "2cum": dce.two_cum}
TOL = {"Ktrans": (0.005, 0.1), "PS": (0.005, 0.1), "ve": (0.05, 0.0), "vp": (0.025, 0.0),
       "Fp": (5.0, 0.1), "delay_s": (1.0, 0.0)}            # OSIPI atol, rtol (delay: 1 s)
# osipy names (its PS of the 2CXM/2CUM is in mL/min/100 mL, i.e. 100 x ours; its Patlak
# "Ktrans" is our PS); dcmri kinetics and parameters (SI, blood-based: vp = (1 - H) vb)
OSIPY_NAMES = {"delay_s": ("delay", 1.0)}
OSIPY_PS_SCALE = {"2cxm": 0.01, "2cum": 0.01}
DCMRI_KINETICS = {"tofts": "WV", "extended_tofts": "HF", "patlak": "HFU", "2cxm": "2CX", "2cum": "2CU"}


def synthetic(model, n, delayed, rng):
    """(t [s], plasma AIF [mM], noisy Ct (n, n_t) [mM], truth dict of (n,) arrays)."""
    t = np.arange(N_T) * DT_S
    cp = dce.plasma_aif(dce.parker_aif(t, delay_s=30.0), hct=HCT)
    truth = {k: rng.uniform(lo, hi, n) for k, (lo, hi) in TRUTH[model].items()}
    if delayed:
        truth["delay_s"] = rng.uniform(*DELAYS_S, n)
        ct = np.empty((n, N_T))
        for d in np.unique(np.round(truth["delay_s"], 1)):      # 0.1 s groups of voxels
            sel = np.round(truth["delay_s"], 1) == d
            truth["delay_s"][sel] = d
            ct[sel] = FORWARD[model](t, cp, **{k: v[sel] for k, v in truth.items()
                                              if k != "delay_s"}, delay_s=d)
    else:
        ct = FORWARD[model](t, cp, **truth)
    return t, cp, ct + rng.normal(0.0, NOISE_MM, ct.shape), truth


def accuracy(est, truth):
    out = {}
    for k, r in truth.items():
        atol, rtol = TOL[k]
        e = np.asarray(est[k], dtype=float).ravel()
        ok = np.abs(e - r) <= atol + rtol * np.abs(r)
        out[k] = {"median_abs_error": float(np.nanmedian(np.abs(e - r))),
                  "osipi_pass_fraction": float(np.mean(ok)),
                  "nan_fraction": float(np.mean(np.isnan(e)))}
    return out


def timed(fn, repeat=1):
    """Result of ``fn()`` and the (wall, CPU) seconds of the fastest of ``repeat`` runs: on a
    shared machine the fastest run is the one least slowed by other processes."""
    best = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        sec = (time.perf_counter() - t0, time.process_time() - c0)
        best = sec if best is None or sec[0] < best[0] else best
    return res, best


def run_hybrid(model, t, cp, ct, delayed, repeat):
    return timed(lambda: dce.fit(t, ct, cp, model, fit_delay=delayed), repeat)


def run_osipy(model, t, cp, ct, delayed, repeat):
    import osipy
    res, sec = timed(lambda: osipy.fit_model(model, ct[:, None, None, :], cp, t, fit_delay=delayed),
                     repeat)
    maps = {k: np.asarray(v.values, dtype=float).ravel() for k, v in res.parameter_maps.items()}
    out = {}
    for k in TRUTH[model]:
        if model == "patlak" and k == "PS":
            out[k] = maps["Ktrans"]
        elif k == "PS":
            out[k] = maps["PS"] * OSIPY_PS_SCALE.get(model, 1.0)
        else:
            out[k] = maps[k]
    if delayed:
        out["delay_s"] = maps["delay"]
    return out, sec


def run_dcmri(model, t, cp, ct, delayed, repeat):
    import dcmri
    if delayed:
        raise NotImplementedError("dcmri.TissueArray has no per-voxel arterial delay (its Ta "
                                  "is one value for the whole array)")
    sig = dce.spgr_signal(S0, 1.0 / T10_S + R1_PER_MM_S * ct, TR_S, FA_DEG)
    tissue = dcmri.TissueArray(
        (ct.shape[0],), kinetics=DCMRI_KINETICS[model], water_exchange="FF", sequence="SS",
        ca=cp * (1.0 - HCT) / 1000.0, t=t,            # dcmri: blood concentration in M
        r1=R1_PER_MM_S * 1000.0, TR=TR_S, FA=FA_DEG, R10=1.0 / T10_S, n0=6, H=HCT)
    _, sec = timed(lambda: tissue.train(t, sig))     # minutes per run: once
    p = {k: np.asarray(v[1], dtype=float) for k, v in tissue.export_params().items()}
    # SI (mL/s/mL) -> 1/min and mL/100 mL/min; dcmri's vp and Fp are plasma (1 - H) values
    conv = {"Ktrans": ("Ktrans", 60.0), "PS": ("PS", 60.0), "ve": ("vi", 1.0),
            "vp": ("vp", 1.0), "Fp": ("Fp", 6000.0)}
    if model == "extended_tofts":
        conv["Ktrans"] = ("PS", 60.0)
    return {k: p[conv[k][0]] * conv[k][1] for k in TRUTH[model]}, sec


PEERS = {
    "osipy": (run_osipy, "osipy.fit_model(model, C, aif, t, fit_delay=...), default "
                         "Levenberg-Marquardt fitter, concentration input"),
    "dcmri": (run_dcmri, "dcmri.TissueArray(kinetics=..., sequence='SS').train(t, signal): fits "
                         f"SPGR signals, so the noisy concentrations were converted with T10 "
                         f"{T10_S} s, r1 {R1_PER_MM_S} /mM/s, TR {TR_S} s, FA {FA_DEG} deg, S0 "
                         f"{S0}; one scipy curve_fit per voxel, parallel=False"),
}


def version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _timing(n, sec):
    return {"voxels_fitted": n, "seconds": sec[0], "cpu_seconds": sec[1],
            "voxels_per_s": n / sec[0], "voxels_per_cpu_s": n / sec[1]}


def run_case(model, delayed, shape, n_sub, seed, repeat):
    """One (model, delay) case: hybrid on the whole volume, each peer on a subset."""
    rng = np.random.default_rng(seed)
    n_vox = int(np.prod(shape))
    t, cp, ct, truth = synthetic(model, n_vox, delayed, rng)
    load = os.getloadavg()[0]
    res, sec = run_hybrid(model, t, cp, ct.reshape(shape + (N_T,)), delayed, repeat)
    flat = {k: res[k].ravel() for k in truth}
    case = {"load_average_1min": [load, os.getloadavg()[0]],
            "hybrid": {"status": "ok", **_timing(n_vox, sec), "extrapolated": False,
                       "accuracy": accuracy(flat, truth)}}
    for name, (fn, how) in PEERS.items():
        sub = np.sort(rng.choice(n_vox, size=min(n_sub[name], n_vox), replace=False))
        sub_truth = {k: v[sub] for k, v in truth.items()}
        try:
            est, psec = fn(model, t, cp, ct[sub], delayed, repeat)
        except ImportError as exc:
            case[name] = {"status": "skipped", "reason": f"not installed ({exc})"}
            continue
        except NotImplementedError as exc:
            case[name] = {"status": "unsupported", "reason": str(exc)}
            continue
        case[name] = {"status": "ok", **_timing(int(sub.size), psec), "extrapolated": sub.size < n_vox,
                      "method": how, "accuracy": accuracy(est, sub_truth),
                      "hybrid_accuracy_same_voxels": accuracy({k: v[sub] for k, v in flat.items()},
                                                              sub_truth)}
    for rate in ("voxels_per_s", "voxels_per_cpu_s"):
        peers = [case[p][rate] for p in PEERS if case[p]["status"] == "ok"]
        case[f"speedup_vs_fastest_peer_{rate}"] = case["hybrid"][rate] / max(peers) if peers else None
    return case


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny volume (8 x 8 x 2)")
    ap.add_argument("--models", nargs="+", default=list(dce.MODELS), choices=dce.MODELS)
    ap.add_argument("--osipy-voxels", type=int, default=2048)
    ap.add_argument("--dcmri-voxels", type=int, default=100)
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--repeat", type=int, default=3, help="runs of hybrid and osipy per case "
                    "(the fastest counts; dcmri runs once)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "dce_fit_speed.json")
    args = ap.parse_args(argv)
    shape = (8, 8, 2) if args.smoke else (64, 64, 4)
    n_sub = {"osipy": args.osipy_voxels, "dcmri": 8 if args.smoke else args.dcmri_voxels}
    load_before = os.getloadavg()
    results, start = {}, time.perf_counter()
    for i, model in enumerate(args.models):
        results[model] = {}
        for delayed in (False, True):
            key = "delay" if delayed else "no_delay"
            results[model][key] = case = run_case(model, delayed, shape, n_sub, args.seed + i,
                                                  1 if args.smoke else args.repeat)
            cells = [f"{name} {case[name]['voxels_per_s']:9.1f}" if case[name]["status"] == "ok"
                     else f"{name} {case[name]['status']:>9s}" for name in ("hybrid", *PEERS)]
            wall, cpu = (case[f"speedup_vs_fastest_peer_{r}"] for r in ("voxels_per_s", "voxels_per_cpu_s"))
            print(f"{model:15s} {key:8s} voxels/s: " + "  ".join(cells)
                  + (f"  x{wall:.1f} (CPU time x{cpu:.1f}) vs fastest peer" if wall else "")
                  + f"  load {case['load_average_1min'][0]:.1f}", flush=True)
        plain, delayed = (results[model][k]["hybrid"]["voxels_per_s"] for k in ("no_delay", "delay"))
        results[model]["delay_cost_ratio_hybrid"] = plain / delayed
        plain, delayed = (results[model][k]["hybrid"]["voxels_per_cpu_s"] for k in ("no_delay", "delay"))
        results[model]["delay_cost_ratio_hybrid_cpu"] = plain / delayed
    report = {
        "benchmark": "dce_fit_speed", "models": args.models, "shape": list(shape),
        "n_t": N_T, "dt_s": DT_S, "noise_sd_mM": NOISE_MM, "seed": args.seed,
        "aif": f"Parker 2006 population AIF, arrival 30 s, plasma (Hct {HCT})",
        "truth_ranges": TRUTH, "true_delay_range_s": DELAYS_S,
        "osipi_tolerances": {k: {"atol": a, "rtol": r} for k, (a, r) in TOL.items()},
        "units": {"seconds": "s wall clock (fastest of --repeat runs)", "voxels_per_s": "1/s",
                  "cpu_seconds": "s CPU time of the process (all threads) in that run",
                  "median_abs_error": "Ktrans, PS 1/min; Fp mL/100 mL/min; ve, vp -; delay s",
                  "delay_cost_ratio_hybrid": "hybrid time per voxel with delay / without",
                  "load_average_1min": "1-minute load average before and after the hybrid fits"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "wall_time_s": time.perf_counter() - start,
        "versions": {d: version(d) for d in ("hybrid", "numpy", "scipy", "osipy", "dcmri")},
        "repeat": args.repeat,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
