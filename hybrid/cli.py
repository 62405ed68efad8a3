"""Command line: ``hybrid <command>`` (also ``python -m hybrid``). The only place that parses
arguments, handles signals and turns failures into exit statuses. Under ``mpirun`` only rank 0
prints.

One error path for every command: a failure that every rank knows about (input errors, and every
stage that ends with :func:`hybrid.collective.everywhere` / ``on_rank0``) prints one
``hybrid: error: ...`` line and exits with status 2 on every rank; a failure on one rank only
prints its line there and aborts all ranks (status 2), so none hangs. SIGINT and SIGTERM stop
every rank within seconds, print one line and exit 130 / 143. Outputs are written as one
transaction (:mod:`hybrid.io.outputs`): complete, with ``summary.json`` last, or absent.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import fcntl
import importlib
import importlib.util
import os
import signal
import stat
import sys
import termios
import threading
import time
import traceback
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
  transport drug transport (liposomal, free, intracellular doxorubicin) from a TOML configuration
  compare   free drug vs non-triggered, pH- and heat-triggered liposomes, with and without radiation
  synthesize twin experiment: FEM transport ground truth -> noisy voxel-averaged drug images + truth
  invert    inverse PINN: IFP coefficients from an IFP map; release rate/pH law, or both, from drug images
  validate  cross-validate an invert run: FEM re-solved at the recovered values vs the PINN (IFP, drug)

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
    demo.add_argument("--output", type=_directory, default=Path("results/demo"), help="output directory")

    forward = _configured_command(
        commands, "forward", help="forward simulation from a TOML configuration",
        description="Solve the steady Darcy-Starling interstitial fluid pressure "
                    "(Baxter & Jain 1989). Writes <output>/ifp.xdmf (+.h5) with "
                    "P1 point data 'pressure' [Pa] and 'velocity' [m/s], and "
                    "<output>/summary.json. See hybrid/config/forward.py for the keys.")

    phantom = commands.add_parser("phantom", help="write the digital MRI phantom and a maps configuration",
                                  description="Digital tumour phantom (host, enhancing rim, core, necrosis) "
                                              "with known Ktrans, ve, vp, T10 and pH_e: writes dce/vfa/cest "
                                              ".nii.gz with .json sidecars, mask.nii.gz, labels.nii.gz, "
                                              "truth/*.nii.gz and maps.toml into OUTPUT_DIR.")
    phantom.add_argument("output", type=_directory, metavar="OUTPUT_DIR", help="output directory")
    phantom.add_argument("--shape", type=int, nargs=3, default=(64, 64, 2), metavar=("NX", "NY", "NZ"),
                         help="grid size in voxels (default 64 64 2)")
    phantom.add_argument("--voxel-mm", type=float, nargs=3, default=(0.25, 0.25, 1.0), metavar=("DX", "DY", "DZ"),
                         help="voxel size [mm] (default 0.25 0.25 1); the body disc is 14 mm across")
    phantom.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")

    maps = _configured_command(
        commands, "maps", help="DCE/CEST NIfTI series -> parameter maps",
        description="Fit DCE (Parker AIF, Tofts family or 2CXM), VFA T1 and CEST pH "
                    "(iopamidol ratiometric) voxel-wise. Writes <output>/<map>.nii.gz "
                    "(source affine; Ktrans [1/min], ve, vp, rss [mM^2], T1 [s], pH, "
                    "ph_valid), maps.png and summary.json. Keys and units: "
                    "hybrid/config/maps.py MapsConfig. Runs serially (rank 0 under mpirun).")
    transport = _configured_command(
        commands, "transport", help="drug transport (liposomal, free, intracellular doxorubicin)",
        description="Time-dependent drug transport from a TOML configuration "
                    "(keys: hybrid/config/transport.py). Writes <output>/transport.xdmf "
                    "(liposomal_drug, free_drug, cell_drug [mol/m^3 of tissue], exposure: "
                    "auc_*, peak_cell_drug, survival_fraction, lethal) and "
                    "<output>/summary.json with the mass balance and exposure.")
    compare = _configured_command(
        commands, "compare", help="delivery scenarios with and without radiation on one mesh",
        description="Eight hybrid transport runs on the same mesh (free, liposomal, "
                    "ph_sensitive, thermosensitive with hyperthermia; each without and "
                    "with [compare] radiation_dose_Gy). Keys: hybrid/config/compare.py. "
                    "Writes <output>/<scenario>/, compare.csv, compare.json and figures.",
        config_help="TOML configuration file (a transport configuration)")
    synthesize = _configured_command(
        commands, "synthesize", help="twin experiment: synthetic drug images from a FEM truth",
        description="A transport run (keys: hybrid/config/transport.py) sampled at "
                    "[observation] times on a voxel grid, with seeded noise (keys: "
                    "hybrid/config/synthesize.py). Writes <output>/observations.nii.gz "
                    "(+ .json sidecar), truth.json and truth/ (ifp.nii.gz [Pa], ...).",
        config_help="TOML configuration file (transport + [observation])")
    invert = _configured_command(
        commands, "invert", help="inverse PINN: IFP coefficients and/or release kinetics from images "
                                 "(torch; FEM only for [training] warm_start = \"fem\")",
        description="Train the inverse PINN (hybrid/inverse/) on the [data] images with the "
                    "[unknowns] bounds (keys: hybrid/config/invert.py). [problem] kind: ifp "
                    "(IFP coefficients from an IFP map), release (release rate or pH law from "
                    "drug images), coupled (tumour K and p_e with the release, from drug "
                    "images). Writes <output>/inversion.json (estimates, units, spread, truth "
                    "errors, loss history), the recovered maps on the observation grid "
                    "(ifp.nii.gz [Pa]; drug series [mol/m^3]) and networks/.")
    invert.add_argument("--resume", action="store_true",
                        help="continue from [training] checkpoint after an interruption (same settings)")
    validate = _configured_command(
        commands, "validate", help="cross-validate a `hybrid invert` run against the FEM",
        description="Re-solve the FEM (IFP, and the transport for kinds release and coupled) "
                    "with the recovered values of an invert run (keys: hybrid/config/crossval.py); "
                    "relative L2 errors of the PINN vs the FEM, of held-out frames and, with a "
                    "truth, against the truth; identifiability of each release/coupled unknown. "
                    "Writes <output>/validation.json.")
    for command in (demo, forward, phantom, maps, transport, compare, synthesize, invert, validate):
        command.add_argument("--overwrite", action="store_true",
                             help="replace the contents of a non-empty output directory (only once the run "
                                  "has succeeded; without it a non-empty output directory is refused)")
    return parser


def _configured_command(commands, name: str, *, help: str, description: str,
                        config_help: str = "TOML configuration file") -> argparse.ArgumentParser:
    """A subcommand that reads a TOML configuration, with ``--output`` overriding its [output] directory."""
    command = commands.add_parser(name, help=help, description=description)
    command.add_argument("config", type=Path, help=config_help)
    command.add_argument("--output", type=_directory, help="override [output] directory")
    return command


def _directory(text: str) -> Path:
    """argparse type of an output directory: a non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output directory must not be empty")
    return Path(text)


def _version() -> str:
    from hybrid import __version__

    return __version__


INTERRUPT_GRACE_S = 1.0
"""After a signal, the main thread has this long to reach Python code, where it ends the process (it
cannot while a C call such as gmsh meshing or an MPI wait runs); then a watchdog thread does."""


class _Interrupts:
    """SIGINT/SIGTERM end the process where its main thread stands, without unwinding the stack.

    Unwinding would run ``finally`` blocks and ``with`` exits (closing an HDF5 file, destroying a
    PETSc solver) that are collective calls the other ranks never join: those ranks wait in another
    collective call, both hold the GIL, no handler can run and the job hangs. A rank that cannot
    reach Python code because it waits in a collective call is ended by mpirun when another rank
    exits. Rank 0 removes the partial outputs and prints the one line; if rank 0 is the rank that
    waits, the first other rank to take the staging folder does (:meth:`OutputTransaction.discard`).

    Only the commit of the outputs is never cut: a signal during it is held until it ends, and one
    after it is ignored (the outputs are complete; the run only has to exit 0)."""

    def __init__(self):
        self.rank = 0
        self.committing = False
        self.held_signal: int | None = None
        self.outputs_complete = False
        self.exiting = threading.Lock()   # the main thread's handler and the watchdog may both exit

    def install(self, rank: int) -> None:
        """Handle SIGINT/SIGTERM in the main thread; a watchdog thread, woken through the signal
        wakeup fd, ends the process if the main thread has not within the grace time."""
        self.rank, self.committing, self.held_signal, self.outputs_complete = rank, False, None, False
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        signal.set_wakeup_fd(write_fd)
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, self._handler)
        threading.Thread(target=self._watchdog, args=(read_fd,), name="hybrid-interrupt-watchdog",
                         daemon=True).start()

    def _handler(self, signum, frame) -> None:
        for name in (signal.SIGINT, signal.SIGTERM):
            signal.signal(name, signal.SIG_IGN)  # one interrupt is enough; the watchdog has woken
        if self.committing:
            self.held_signal = signum
        elif not self.outputs_complete:
            self.exit(signum)

    def _watchdog(self, read_fd: int) -> None:
        signum = os.read(read_fd, 1)[0]
        time.sleep(INTERRUPT_GRACE_S)
        while self.committing:
            time.sleep(0.05)
        if not self.outputs_complete:
            self.exit(signum)

    @contextlib.contextmanager
    def commit(self):
        """The commit of the outputs (collective): not cut by a signal; signals after it are ignored."""
        self.committing = True
        try:
            yield
        except BaseException:
            self.committing = False
            if self.held_signal is not None:
                self.exit(self.held_signal)
            raise
        self.outputs_complete = True
        self.committing = False

    def exit(self, signum: int) -> None:
        """Remove this run's partial outputs, print one line and end the process: 128 + signum (or
        return, if the main thread completed the outputs meanwhile)."""
        from hybrid.io.outputs import discard_active

        with self.exiting:
            if self.rank > 0:  # rank 0 cleans up, prints and exits, and mpirun ends this rank
                time.sleep(2 * INTERRUPT_GRACE_S)
            while self.committing:   # the main thread went on into the commit meanwhile
                time.sleep(0.05)
            if self.outputs_complete:
                return
            removed = discard_active()
            if self.rank == 0 or removed:
                # os.write, not print: the main thread may have been stopped inside a print
                os.write(2, f"hybrid: interrupted by {signal.Signals(signum).name}; partial outputs removed\n"
                         .encode())
            if threading.current_thread() is threading.main_thread():   # the watchdog could block on its lock
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
            os._exit(128 + signum)  # no MPI_Finalize: other ranks may be inside a collective call


_INTERRUPTS = _Interrupts()


def _wait_until_stderr_is_read(timeout_s: float = 2.0) -> None:
    """Wait until the launcher has read what this process wrote to its stderr pipe. MPICH's
    launcher drops output still in the pipe when MPI_Abort ends the job (seen: the disk-full error
    line lost after rank 1's HDF5 diagnostic in 7 runs of 60). Only a pipe (what MPICH's launcher
    gives) is waited for: on a file, terminal or socket FIONREAD does not count unread output."""
    with contextlib.suppress(OSError):
        if not stat.S_ISFIFO(os.fstat(2).st_mode):
            return
        unread = array.array("i", [0])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fcntl.ioctl(2, termios.FIONREAD, unread)
            if unread[0] == 0:
                return
            time.sleep(0.01)


@contextlib.contextmanager
def _outputs(comm, directory: Path, overwrite: bool, inputs=()):
    """Collective output transaction (:mod:`hybrid.io.outputs`): yields the staging folder to write
    into; commits it on success, removes it on any failure."""
    from hybrid.collective import on_rank0
    from hybrid.io.outputs import OutputTransaction

    transaction = OutputTransaction(directory, overwrite=overwrite, inputs=inputs)
    staging, created = comm.bcast(on_rank0(comm, lambda: (transaction.open(), transaction.created_directory)),
                                  root=0)
    if comm.rank > 0:
        transaction.follow(staging, created)
    try:
        yield staging
        with _INTERRUPTS.commit():
            comm.barrier()   # every rank holds its signals before rank 0 starts moving files
            on_rank0(comm, transaction.commit)
        transaction.forget()
    except BaseException:
        if comm.rank == 0:
            transaction.discard()
        raise


def _with_output(config, args):
    """``config`` with ``--output``, when given, as its output directory."""
    from hybrid.config.validate import with_output_directory

    return config if args.output is None else with_output_directory(config, args.output)


def _demo(args, comm, log) -> None:
    from hybrid.commands.demo import run_demo

    with _outputs(comm, args.output, args.overwrite) as staging:
        run_demo(staging, comm, log)
    log(f"done: outputs in {args.output}")


def _forward(args, comm, log) -> None:
    from hybrid.collective import everywhere
    from hybrid.config import load_forward_config
    from hybrid.config.validate import with_output_directory
    from hybrid.commands.forward import run_forward
    from hybrid.mesh.geometry import check_mesh_size

    config = _with_output(everywhere(comm, lambda: load_forward_config(args.config)), args)
    everywhere(comm, lambda: check_mesh_size(config.geometry))
    inputs = (args.config, config.geometry.mask, config.images.ktrans)
    with _outputs(comm, config.output.directory, args.overwrite, inputs) as staging:
        run_forward(with_output_directory(config, staging), comm, log)
    log(f"done: outputs in {config.output.directory}")


def _phantom(args, comm, log) -> None:
    from hybrid.collective import on_rank0
    from hybrid.commands.phantom import run_phantom

    with _outputs(comm, args.output, args.overwrite) as staging:
        on_rank0(comm, lambda: run_phantom(staging, log, shape=tuple(args.shape), voxel_mm=tuple(args.voxel_mm),
                                           seed=args.seed))
    log(f"done: next run `hybrid maps {args.output / 'maps.toml'}`")


def _maps(args, comm, log) -> None:
    from hybrid.collective import everywhere, on_rank0
    from hybrid.config import load_maps_config
    from hybrid.config.validate import with_output_directory
    from hybrid.commands.maps import run_maps

    config = _with_output(everywhere(comm, lambda: load_maps_config(args.config)), args)
    inputs = (args.config, config.dce and config.dce.series, config.vfa and config.vfa.series,
              config.cest and config.cest.series, config.cest and config.cest.calibration_spectra,
              config.mask and config.mask.path)
    with _outputs(comm, config.output.directory, args.overwrite, inputs) as staging:
        on_rank0(comm, lambda: run_maps(with_output_directory(config, staging), log))
    log(f"done: outputs in {config.output.directory}")


def _transport(args, comm, log) -> None:
    from hybrid.collective import everywhere
    from hybrid.commands.transport import run_transport
    from hybrid.config.transport import load_transport_config
    from hybrid.config.validate import with_output_directory

    config = _with_output(everywhere(comm, lambda: load_transport_config(args.config)), args)
    with _outputs(comm, config.output.directory, args.overwrite, (args.config,)) as staging:
        run_transport(with_output_directory(config, staging), comm, log)
    log(f"done: outputs in {config.output.directory}")


def _compare(args, comm, log) -> None:
    from hybrid.collective import everywhere
    from hybrid.commands.compare import run_compare
    from hybrid.config.compare import load_compare_config
    from hybrid.config.validate import read_toml

    scenarios, source = everywhere(comm, lambda: (load_compare_config(args.config), read_toml(args.config)))
    output = args.output if args.output is not None else scenarios[0][1].output.directory
    with _outputs(comm, output, args.overwrite, (args.config,)) as staging:
        run_compare(scenarios, staging, comm, log, source)
    log(f"done: outputs in {output}")


def _synthesize(args, comm, log) -> None:
    from hybrid.collective import everywhere
    from hybrid.commands.synthesize import run_synthesize
    from hybrid.config.synthesize import load_synthesize_config
    from hybrid.config.validate import with_output_directory

    config, observation = everywhere(comm, lambda: load_synthesize_config(args.config))
    config = _with_output(config, args)
    with _outputs(comm, config.output.directory, args.overwrite, (args.config,)) as staging:
        run_synthesize(with_output_directory(config, staging), observation, comm, log)
    log(f"done: outputs in {config.output.directory}")


def _invert(args, comm, log) -> None:
    from hybrid.collective import everywhere, on_rank0
    from hybrid.commands.invert import run_invert
    from hybrid.config.invert import load_invert_config

    config = _with_output(everywhere(comm, lambda: load_invert_config(args.config)), args)
    if config.training.warm_start == "fem" and importlib.util.find_spec("dolfinx") is not None:
        # PETSc initialises collectively over all ranks when first imported: import the FEM stack on
        # every rank here, not only inside rank 0's warm-start solve (rank 0 waited for ever there)
        everywhere(comm, lambda: importlib.import_module("hybrid.commands.transport"))
    inputs = (args.config, config.data.observations, config.data.released_fraction, config.data.truth,
              config.problem.transport, config.data.ph_map)
    with _outputs(comm, config.output.directory, args.overwrite, inputs) as staging:
        on_rank0(comm, lambda: run_invert(config, staging, log, resume=args.resume))
    log(f"done: outputs in {config.output.directory}")


def _validate(args, comm, log) -> None:
    from hybrid.collective import everywhere
    from hybrid.commands.crossval import run_crossval
    from hybrid.config.crossval import load_crossval_config

    config = _with_output(everywhere(comm, lambda: load_crossval_config(args.config)), args)
    inputs = (args.config, config.inversion.directory, config.invert.data.observations, config.invert.data.truth,
              config.invert.data.ph_map)
    with _outputs(comm, config.output.directory, args.overwrite, inputs) as staging:
        run_crossval(config, staging, comm, log)
    log(f"done: outputs in {config.output.directory}")


COMMANDS = {"demo": _demo, "forward": _forward, "phantom": _phantom, "maps": _maps, "transport": _transport,
            "compare": _compare, "synthesize": _synthesize, "invert": _invert,
            "validate": _validate}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hybrid`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    # PETSc would otherwise catch SIGTERM itself and MPI_Abort (status 59) before our handler runs
    os.environ["PETSC_OPTIONS"] = f"{os.environ.get('PETSC_OPTIONS', '')} -no_signal_handler".strip()
    from mpi4py import MPI

    from hybrid.collective import RunError, describe

    comm = MPI.COMM_WORLD
    started = time.perf_counter()
    if threading.current_thread() is threading.main_thread():
        _INTERRUPTS.install(comm.rank)

    def log(message: str) -> None:
        if comm.rank == 0:
            print(f"[hybrid {time.perf_counter() - started:7.1f} s] {message}", flush=True)

    try:
        COMMANDS[args.command](args, comm, log)
    except RunError as exc:  # raised on every rank
        if comm.rank == 0:
            print(f"hybrid: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001  (not agreed on: print here, end every rank)
        from hybrid.io.outputs import discard_active

        if comm.rank == 0:
            discard_active()  # rank 0 only: when another rank fails alone, rank 0 may still be writing
        else:  # if rank 0 failed too, it prints and aborts first: one line, not one per rank
            time.sleep(INTERRUPT_GRACE_S)
        if os.environ.get("HYBRID_TRACEBACK"):
            traceback.print_exc()
        where = f" [rank {comm.rank} of {comm.size}]" if comm.size > 1 else ""
        print(f"hybrid: error: {describe(exc)}{where}", file=sys.stderr, flush=True)
        if comm.size > 1:
            _wait_until_stderr_is_read()
            comm.Abort(2)
        sys.stdout.flush()
        os._exit(2)  # skip destructors of half-written files (HDF5 aborts closing them twice)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
