"""Command line: ``hybrid <command>`` (also ``python -m hybrid``). The only place that parses
arguments and configures logging. Under ``mpirun`` only rank 0 prints.

Errors in the input (configuration, files) print one ``hybrid: error: ...`` line on rank 0 and
exit with status 2 on every rank; an unexpected failure on one rank aborts all ranks so none hangs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

DESCRIPTION = """\
hybrid: imaging-guided modelling of nanomedicine delivery in solid tumours.

commands:
  demo      built-in phantoms end to end: IFP verified against the closed form, then MRI phantom
            -> DCE/CEST maps -> tumour mesh from the mask -> IFP driven by the Ktrans map
  forward   forward FEM simulation from a TOML configuration (run it under mpirun -n N)
  phantom   write a digital tumour phantom (DCE, VFA, CEST NIfTI + sidecars) and its maps.toml
  maps      quantitative MRI maps (Ktrans, ve, vp, T1, pH) from NIfTI series and a TOML file
            e.g. hybrid phantom results/phantom && hybrid maps results/phantom/maps.toml

Units are SI (m, Pa, s) in configurations and outputs unless a key says otherwise.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybrid", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hybrid {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

    demo = commands.add_parser("demo", help="run the built-in phantoms end to end",
                               description="Part 1 (<output>/verification): mesh a 2-D tumour (4 mm) in a "
                                           "2 mm host shell, solve the interstitial fluid pressure and "
                                           "compare with the closed form (ifp.xdmf, summary.json, "
                                           "ifp_demo.png). Part 2 (<output>/phantom, <output>/imaging): "
                                           "write the digital MRI phantom, fit DCE/CEST maps, mesh the "
                                           "tumour traced from its mask and solve IFP with Lp S/V scaled "
                                           "by the fitted Ktrans map.")
    demo.add_argument("--output", type=Path, default=Path("results/demo"), help="output directory")

    forward = commands.add_parser("forward", help="forward simulation from a TOML configuration",
                                  description="Solve the steady Darcy-Starling interstitial fluid pressure "
                                              "(Baxter & Jain 1989). Writes <output>/ifp.xdmf (+.h5) with "
                                              "P1 point data 'pressure' [Pa] and 'velocity' [m/s], and "
                                              "<output>/summary.json. See hybrid/config.py for the keys.")
    forward.add_argument("config", type=Path, help="TOML configuration file")
    forward.add_argument("--output", type=Path, help="override [output] directory")

    phantom = commands.add_parser("phantom", help="write the digital MRI phantom and a maps configuration",
                                  description="Digital tumour phantom (host, enhancing rim, core, necrosis) "
                                              "with known Ktrans, ve, vp, T10 and pH_e: writes dce/vfa/cest "
                                              ".nii.gz with .json sidecars, mask.nii.gz, labels.nii.gz, "
                                              "truth/*.nii.gz and maps.toml into OUTPUT_DIR.")
    phantom.add_argument("output", type=Path, metavar="OUTPUT_DIR", help="output directory")
    phantom.add_argument("--shape", type=int, nargs=3, default=(64, 64, 2), metavar=("NX", "NY", "NZ"),
                         help="grid size in voxels (default 64 64 2)")
    phantom.add_argument("--voxel-mm", type=float, nargs=3, default=(0.25, 0.25, 1.0), metavar=("DX", "DY", "DZ"),
                         help="voxel size [mm] (default 0.25 0.25 1); the body disc is 14 mm across")
    phantom.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")

    maps = commands.add_parser("maps", help="DCE/CEST NIfTI series -> parameter maps",
                               description="Fit DCE (Parker AIF, Tofts family or 2CXM), VFA T1 and CEST pH "
                                           "(iopamidol ratiometric) voxel-wise. Writes <output>/<map>.nii.gz "
                                           "(source affine; Ktrans [1/min], ve, vp, rss [mM^2], T1 [s], pH, "
                                           "ph_valid), maps.png and summary.json. Keys and units: "
                                           "hybrid/config.py MapsConfig. Runs serially (rank 0 under mpirun).")
    maps.add_argument("config", type=Path, help="TOML configuration file")
    maps.add_argument("--output", type=Path, help="override [output] directory")
    return parser


def _version() -> str:
    from hybrid import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hybrid`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    started = time.perf_counter()

    def log(message: str) -> None:
        if comm.rank == 0:
            print(f"[hybrid {time.perf_counter() - started:7.1f} s] {message}", flush=True)

    from hybrid.config import ConfigError

    try:
        if args.command == "demo":
            from hybrid.pipeline import run_demo

            run_demo(args.output, comm, log)
            log(f"done: outputs in {args.output}")
        elif args.command == "forward":
            from dataclasses import replace

            from hybrid.config import load_forward_config
            from hybrid.pipeline import run_forward

            config = load_forward_config(args.config)
            if args.output is not None:
                config = replace(config, output_directory=args.output)
            run_forward(config, comm, log)
            log(f"done: outputs in {config.output_directory}")
        elif args.command == "phantom":
            from hybrid.pipeline import on_rank0, run_phantom

            maps_toml = on_rank0(comm, lambda: run_phantom(args.output, log, shape=tuple(args.shape),
                                                             voxel_mm=tuple(args.voxel_mm), seed=args.seed))
            log(f"done: next run `hybrid maps {maps_toml}`")
        elif args.command == "maps":
            from dataclasses import replace

            from hybrid.config import load_maps_config
            from hybrid.pipeline import on_rank0, run_maps

            config = load_maps_config(args.config)
            if args.output is not None:
                config = replace(config, output_directory=args.output)
            on_rank0(comm, lambda: run_maps(config, log))
            log(f"done: outputs in {config.output_directory}")
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        # Raised identically on every rank (inputs are read and checked on all of them).
        if comm.rank == 0:
            print(f"hybrid: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001  (an unexpected failure: never leave ranks hanging)
        print(f"hybrid: rank {comm.rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if comm.size > 1:
            comm.Abort(1)
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
