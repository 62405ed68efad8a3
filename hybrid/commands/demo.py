"""``hybrid demo``: the IFP verification case and the imaging chain (phantom -> maps -> mask mesh
-> IFP with Ktrans-scaled exchange), each with its own outputs and figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mpi4py import MPI

from hybrid.collective import on_rank0
from hybrid.commands.forward import ForwardRun, run_forward
from hybrid.commands.maps import run_maps
from hybrid.commands.phantom import run_phantom
from hybrid.config import forward_config_from_dict

__all__ = ["DEMO_CONFIG", "run_demo"]

DEMO_CONFIG = {
    "geometry": {"shape": "disc", "tumour_radius": 4.0e-3, "host_thickness": 2.0e-3, "mesh_size": 1.5e-4},
    "boundary": {"far_field_pressure": 0.0},
    "output": {"directory": "verification"},
}
"""Built-in phantom for ``hybrid demo``: a 2-D tumour (Baxter-Jain values) in host tissue; its paths
are relative to the demo's output folder, as a TOML file's are to the file's folder."""


def _plot_pressure(run: ForwardRun, comm: MPI.Comm, path: Path, tumour_radius: float | None, log) -> None:
    """Gather the nodal pressure on rank 0 and draw the map and radial profile to ``path``."""
    from hybrid.forward.sampling import nodal_samples
    from hybrid.report.figures import plot_radial_pressure

    gathered = comm.gather(nodal_samples(run.solution.pressure), root=0)

    def plot() -> None:
        xy = np.concatenate([c for c, _ in gathered])[:, :2]
        p = np.concatenate([v for _, v in gathered])
        plot_radial_pressure(xy, p, run.exact, tumour_radius, path)
        log(f"wrote {path.name}")   # path is in the staging folder until the run commits

    on_rank0(comm, plot)


def run_demo(output_directory: Path, comm: MPI.Comm = MPI.COMM_WORLD, log=None) -> dict[str, ForwardRun]:
    """``hybrid demo``, two parts, each with its own ifp.xdmf, summary.json and figure:

    1. ``verification/``: 2-D tumour (Baxter-Jain values) in host tissue, IFP against the closed form;
    2. ``imaging/``: the digital MRI phantom -> DCE/CEST maps (``hybrid maps``) -> tumour mesh traced
       from the phantom's tumour mask -> IFP with Lp S/V scaled by the fitted Ktrans map.
    """
    from hybrid.config import load_maps_config
    from hybrid.io.nifti import read_volume, write_volume

    log = log or (lambda message: None)
    out = Path(output_directory)
    config = forward_config_from_dict(DEMO_CONFIG, "built-in demo", base=out)
    log("part 1/2: IFP in a 2-D tumour in host tissue, against the closed form")
    runs = {"verification": run_forward(config, comm, log)}
    _plot_pressure(runs["verification"], comm, out / "verification" / "ifp_demo.png",
                   config.geometry.tumour_radius, log)

    log("part 2/2: digital MRI phantom -> maps -> mask mesh -> IFP with Ktrans-scaled exchange")
    phantom_dir = out / "phantom"

    def imaging_stages() -> None:  # serial numpy
        maps_config = load_maps_config(run_phantom(phantom_dir, log))
        run_maps(maps_config, log)
        labels, affine_mm = read_volume(phantom_dir / "labels.nii.gz")
        write_volume(phantom_dir / "tumour_mask.nii.gz", labels >= 2, affine_mm, dtype=np.uint8,
                     description="hybrid phantom tumour (rim, core, necrotic)", intent_name="mask")

    on_rank0(comm, imaging_stages)
    imaging = {   # paths relative to ``out``, like DEMO_CONFIG's
        "geometry": {"shape": "mask", "mask": "phantom/tumour_mask.nii.gz", "mesh_size": 1.5e-4},
        "images": {"ktrans": "phantom/maps/Ktrans.nii.gz"},
        "output": {"directory": "imaging"},
    }
    config = forward_config_from_dict(imaging, "built-in demo (imaging)", base=out)
    runs["imaging"] = run_forward(config, comm, log)
    _plot_pressure(runs["imaging"], comm, out / "imaging" / "ifp_imaging.png", None, log)
    return runs
