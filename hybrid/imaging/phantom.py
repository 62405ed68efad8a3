"""Digital tumour phantom with known DCE and CEST parameters (closed-loop tests, ``hybrid phantom``).

Geometry (world mm; the grid is centred on the tumour, which sits at world (0, 0, 0)): a body disc
of radius 7 mm (host tissue) holding a tumour disc of radius 4 mm with a 1 mm enhancing rim, a
viable core and a necrotic centre (radius 1.5 mm); the same discs on every slice (a cylinder).
Outside the body is air: noise only. Region values (``REGIONS``) are typical preclinical numbers
chosen for contrast, not fitted to data.

DCE: extended Tofts tissue concentration (``hybrid.imaging.dce.extended_tofts``) driven by the
rodent population AIF of McGrath et al. 2009 (``dce.preclinical_aif``, the one a 9.4 T mouse study
would use; ``DCE_SETTINGS["aif"]``) converted to plasma (haematocrit 0.42), arriving at
``DCE_SETTINGS["aif_delay_s"]``; SPGR
signal (TR 5 ms, flip angle 20 deg, r1 4.0 /(mM s)) from R1 = 1/T10 + r1 C; Rician noise (complex
Gaussian, magnitude) of SD = host pre-contrast signal / ``snr``. VFA series (2, 5, 10, 15, 20 deg,
same TR and noise) for the T1 map.

CEST: iopamidol Z-spectra from the Bloch-McConnell solver at 9.4 T, 3 uT, 6 s with an MT pool,
simulated once per region (its pH and iopamidol uptake, 20-40 mM; tissue water T1 2.0 s, T2 0.2 s)
and copied into the voxels, S0 from a -300 ppm reference volume, Rician noise of SD
``cest_noise`` x S0; the same series at a second power (2 uT, ``CEST_SETTINGS["b1_second_T"]``,
independent noise) for the two-power pH index. The pH calibration (``calibration_ph``/
``calibration_ratio``) is the noiseless log10 amplitude ratio of vials at pH 6.2-7.3 simulated as
calibration phantoms are measured: 30 mM in water (T1 2.5 s, T2 0.5 s), so the tissue differs from
the vials in agent concentration and water relaxation (no inverse crime); ``vial_spectra`` are
those vials' noiseless raw spectra at both powers (a calibration table for either index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybrid.imaging import bloch_mcconnell as bm
from hybrid.imaging import cest, dce

__all__ = ["Phantom", "make_phantom", "REGIONS", "LABELS", "DCE_SETTINGS", "CEST_SETTINGS"]

LABELS = {"background": 0, "host": 1, "rim": 2, "core": 3, "necrotic": 4}
#: per region: Ktrans [1/min], ve, vp [-], T10 [s], extracellular pH
REGIONS = {
    "host": dict(Ktrans=0.05, ve=0.15, vp=0.03, T10=1.6, pH=7.1),
    "rim": dict(Ktrans=0.6, ve=0.30, vp=0.08, T10=2.0, pH=6.9),
    "core": dict(Ktrans=0.2, ve=0.40, vp=0.03, T10=2.2, pH=6.7),
    "necrotic": dict(Ktrans=0.02, ve=0.60, vp=0.005, T10=2.8, pH=6.5),
}
RADII_MM = {"body": 7.0, "tumour": 4.0, "core": 3.0, "necrotic": 1.5}
DCE_SETTINGS = dict(aif="preclinical", tr_s=5e-3, flip_angle_deg=20.0, r1_per_mM_s=4.0, hematocrit=0.42,
                    frame_interval_s=2.5, n_frames=120, aif_delay_s=30.0, vfa_deg=(2.0, 5.0, 10.0, 15.0, 20.0),
                    m0=1000.0)
CEST_SETTINGS = dict(b0_T=9.4, b1_T=3.0e-6, b1_second_T=2.0e-6, t_sat_s=6.0, concentration_M=0.030, mt_fraction=0.05,
                     calibration_ph=tuple(np.round(np.arange(6.2, 7.31, 0.1), 2)),
                     ratio="amplitude", vial_water_t1_t2_s=(2.5, 0.5), tissue_water_t1_t2_s=(2.0, 0.2),
                     tissue_concentration_M={"host": 0.020, "rim": 0.040, "core": 0.030, "necrotic": 0.020})
CEST_OFFSETS_PPM = np.concatenate([[-300.0], np.round(np.arange(-10.0, 10.001, 0.25), 3)])


@dataclass(frozen=True)
class Phantom:
    """Ground truth maps (x, y, z), the synthetic series (x, y, z, n) and their acquisition axes."""

    affine_mm: np.ndarray
    labels: np.ndarray                 # LABELS
    truth: dict[str, np.ndarray]       # Ktrans [1/min], ve, vp [-], T10 [s], pH
    dce: np.ndarray                    # SPGR signal [a.u.]
    frame_times_s: np.ndarray
    vfa: np.ndarray                    # SPGR signal [a.u.] per flip angle
    cest: np.ndarray                   # saturated signal [a.u.] per offset at b1_T
    offsets_ppm: np.ndarray
    calibration_ph: np.ndarray         # pH of the calibration vials ...
    calibration_ratio: np.ndarray      # ... and their log10(A 4.2 ppm / A 5.5 ppm) at b1_T
    n_baseline: int                    # pre-contrast frames (frame 0 included)
    cest_second_power: np.ndarray      # saturated signal [a.u.] per offset at b1_second_T
    vial_spectra: np.ndarray           # vials' raw signal [a.u.] (2, vials, offsets): b1_T, b1_second_T


def _labels(shape, voxel_mm) -> tuple[np.ndarray, np.ndarray]:
    """Region labels and the affine [mm] of a grid centred on world (0, 0, 0)."""
    affine = np.diag([*voxel_mm, 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(voxel_mm)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r = np.hypot(affine[0, 0] * i + affine[0, 3], affine[1, 1] * j + affine[1, 3])
    plane = np.zeros(shape[:2], dtype=np.int8)
    plane[r <= RADII_MM["body"]] = LABELS["host"]
    plane[r <= RADII_MM["tumour"]] = LABELS["rim"]
    plane[r <= RADII_MM["core"]] = LABELS["core"]
    plane[r <= RADII_MM["necrotic"]] = LABELS["necrotic"]
    return np.repeat(plane[:, :, None], shape[2], axis=2), affine


def _rician(clean, sd, rng):
    return np.abs(clean + sd * (rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape)))


def make_phantom(shape=(64, 64, 2), voxel_mm=(0.25, 0.25, 1.0), *, snr: float = 50.0,
                 cest_noise: float = 0.005, seed: int = 0) -> Phantom:
    """Build the phantom on a ``shape`` grid of ``voxel_mm`` voxels; ``snr`` is the DCE/VFA
    pre-contrast host signal over the noise SD, ``cest_noise`` the CEST noise SD as a fraction of
    S0. Deterministic for a given ``seed``."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1 or len(voxel_mm) != 3 or min(voxel_mm) <= 0:
        raise ValueError(f"shape must be 3 positive ints and voxel_mm 3 positive sizes [mm], got "
                         f"{shape}, {voxel_mm}")
    if snr <= 0 or cest_noise < 0:
        raise ValueError(f"need snr > 0 and cest_noise >= 0, got {snr}, {cest_noise}")
    rng = np.random.default_rng(seed)
    labels, affine = _labels(shape, voxel_mm)
    truth = {key: np.full(shape, np.nan) for key in ("Ktrans", "ve", "vp", "T10", "pH")}
    for region, values in REGIONS.items():
        inside = labels == LABELS[region]
        for key, value in values.items():
            truth[key][inside] = value
    tissue = labels > 0

    s = DCE_SETTINGS
    times = s["frame_interval_s"] * np.arange(s["n_frames"])
    cp = dce.population_plasma_aif(s["aif"], times, s["aif_delay_s"], s["hematocrit"])
    conc = np.zeros(shape + (times.size,))
    conc[tissue] = dce.extended_tofts(times, cp, truth["Ktrans"][tissue], truth["ve"][tissue], truth["vp"][tissue])
    r10 = np.where(tissue, 1.0 / np.where(tissue, truth["T10"], 1.0), 1.0)[..., None]
    m0 = s["m0"] * tissue[..., None]
    sd = dce.spgr_signal(s["m0"], 1.0 / REGIONS["host"]["T10"], s["tr_s"], s["flip_angle_deg"]) / snr
    signal = _rician(dce.spgr_signal(m0, r10 + s["r1_per_mM_s"] * conc, s["tr_s"], s["flip_angle_deg"]), sd, rng)
    vfa = _rician(dce.spgr_signal(m0, r10, s["tr_s"], np.asarray(s["vfa_deg"])), sd, rng)

    c = CEST_SETTINGS
    cal_ph = np.asarray(c["calibration_ph"])
    cest_signal, vials = [], []
    for b1 in (c["b1_T"], c["b1_second_T"]):      # noise drawn in this order (the 3 uT series as before)
        kwargs = dict(mt=bm.MTPool(fraction=c["mt_fraction"]), b0=c["b0_T"], b1=b1, t_sat=c["t_sat_s"])
        z = np.zeros(shape + (CEST_OFFSETS_PPM.size,))
        for region, values in REGIONS.items():
            z[labels == LABELS[region]] = bm.simulate_iopamidol(
                CEST_OFFSETS_PPM, values["pH"], concentration=c["tissue_concentration_M"][region],
                water=bm.WaterPool(*c["tissue_water_t1_t2_s"]), **kwargs)
        z[..., CEST_OFFSETS_PPM == -300.0] = tissue[..., None]    # the reference volume is S0 itself
        cest_signal.append(_rician(s["m0"] * z, cest_noise * s["m0"], rng))
        vials.append(bm.simulate_iopamidol(CEST_OFFSETS_PPM, cal_ph, concentration=c["concentration_M"],
                                           water=bm.WaterPool(*c["vial_water_t1_t2_s"]), **kwargs))
    cal_ratio = cest.ph_ratio(CEST_OFFSETS_PPM, vials[0], method=c["ratio"])
    return Phantom(affine, labels, truth, signal, times, vfa, cest_signal[0], CEST_OFFSETS_PPM.copy(), cal_ph,
                   cal_ratio, int(np.sum(times < s["aif_delay_s"])), cest_signal[1], s["m0"] * np.stack(vials))
