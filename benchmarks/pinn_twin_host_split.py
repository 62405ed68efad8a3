"""Can a tumour / host split drug network represent the margin of the tumour-in-host twin? (issue 9)

The supervised check of pinn_twin_host_diagnosis.py (the drug network fitted directly to the FEM
liposomal / free / cell drug at every mesh node and every 600 s, 3000 Adam steps of 4096 nodes,
unknowns at the truth) for several drug networks of the same shape (STATE_NETWORK each):

- ``tanh``: CoupledProblem's network, inputs (x~, t~, |phi|, tanh(phi / 0.05)) (the baseline);
- ``signed``: one network of (x~, t~, phi, |phi|) (a derivative jump representable at phi = 0);
- ``split``: RegionSplitNetwork, one network in the tumour and one in the host (may jump);
- ``continuous``: RegionSplitNetwork N_T + max(phi, 0) N_H (continuous by construction).

Reported per network: relative L2 of the fit (liposomal also by region) and the mean-square PINN
residuals of the fit by region (tumour r < 0.9 mm, margin 0.9-1.2 mm, host), the flow from the
pressure network trained alone on 4096 own points (300 Adam + 300 L-BFGS, cached in --work).
Writes benchmarks/results/pinn_twin_host_split.json. Serial, one torch thread.

Measured (load 1.6-3.4): 3000 steps, relative L2 liposomal / free / cell: tanh 11.6 / 10.8 / 12.1 %,
signed 12.7 / 12.2 / 11.2 %, split 11.4 / 10.4 / 9.7 %, continuous 12.4 / 12.4 / 11.1 %; margin
mean-square liposomal residual 19 (tanh) against 0.50-0.58 (the others). 9000 steps: signed
4.7 / 4.5 / 4.5 % (residual 0.19), tanh 3.1 / 2.9 / 3.5 % (residual 7.3).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from mpi4py import MPI

import pinn_twin_host as twin
import pinn_twin_host_diagnosis as diagnosis
import pinn_twin_host_minimum as minimum
from hybrid.commands.transport import build_domain, setup_transport
from hybrid.inverse.coupled import TumourInHost
from hybrid.inverse.networks import STATE_NETWORK, FourierFeatureMLP

NETWORKS = ("tanh", "signed", "split", "continuous")


class RegionSplitNetwork(torch.nn.Module):
    """Two networks of (x~, t~, phi(x~)), one for each side of the interface phi = 0.
    ``continuous`` False: N_T in the tumour (phi < 0), N_H in the host (fields may jump at the
    interface). ``continuous`` True: N_T + max(phi, 0) N_H everywhere (the value is continuous by
    construction, the normal derivative may jump): the concentration-continuity condition is exact."""

    def __init__(self, tumour: torch.nn.Module, host: torch.nn.Module, geometry: TumourInHost,
                 continuous: bool = True):
        super().__init__()
        self.tumour, self.host, self.geometry, self.continuous = tumour, host, geometry, bool(continuous)

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        phi = self.geometry.level_set(xt[:, :-1])
        inputs = torch.cat([xt, phi], dim=1)
        if self.continuous:
            return self.tumour(inputs) + torch.relu(phi) * self.host(inputs)
        return torch.where(phi < 0.0, self.tumour(inputs), self.host(inputs))


class SignedLevelSetInput(torch.nn.Module):
    """``network`` of (x~, t~, phi, |phi|) called with (x~, t~)."""

    def __init__(self, network: torch.nn.Module, geometry):
        super().__init__()
        self.network, self.geometry = network, geometry

    def forward(self, xt: torch.Tensor) -> torch.Tensor:
        phi = self.geometry.level_set(xt[:, :-1])
        return self.network(torch.cat([xt, phi, phi.abs()], dim=1))


def drug_network(kind: str, geometry, seed: int) -> torch.nn.Module:
    """The drug network ``kind`` (module doc) of STATE_NETWORK sub-networks, float64."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "signed":
        return SignedLevelSetInput(FourierFeatureMLP(5, 3, generator=generator, **STATE_NETWORK), geometry).double()
    tumour, host = (FourierFeatureMLP(4, 3, generator=generator, **STATE_NETWORK) for _ in range(2))
    return RegionSplitNetwork(tumour, host, geometry, continuous=kind == "continuous").double()


def truth_problem(work: Path):
    """The host twin's problem at the truth (float64, unknowns fixed, tanh(phi / 0.05) drug input),
    its pressure network trained alone (300 Adam + 300 L-BFGS on 4096 own points), the FEM drug
    fields at every node every 600 s (fem_node_fields) and that pressure check; cached in
    ``work``/split_cache.pt. Returns (problem, xt, target, truth, pressure check)."""
    data = minimum.Twin(work)
    problem = twin.build_problem(data.config, data.records, 0, 256, data.truth, interface_width=0.05).double()
    for unknown in problem.scalar_unknowns():
        unknown.raw.requires_grad_(False)
    cache = work / "split_cache.pt"
    if cache.exists():
        saved = torch.load(cache)
        problem.flow.load_state_dict(saved["flow"])
        return problem, saved["xt"], saved["target"], data.truth, saved["pressure"]
    domain = build_domain(data.config, MPI.COMM_SELF, twin.quiet, {})
    setup = setup_transport(data.config, MPI.COMM_SELF, twin.quiet, {}, domain=domain)
    setup.solver.close()
    start = {k: v.clone() for k, v in problem.flow.state_dict().items()}
    pressure = diagnosis.pressure_check(problem, setup.pressure, start, 4096, 300, 300)
    xt, target = diagnosis.fem_node_fields(problem, data.config, domain, data.truth)
    torch.save({"flow": problem.flow.state_dict(), "xt": xt, "target": target, "pressure": pressure}, cache)
    return problem, xt, target, data.truth, pressure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--suffix", default="", help="appended to each network's key in the JSON (e.g. _9000)")
    parser.add_argument("--output", type=Path, default=twin.HERE / "results" / "pinn_twin_host_split.json")
    parser.add_argument("--work", type=Path, default=twin.HERE.parent / "results" / "pinn_twin_host")
    args = parser.parse_args()
    torch.set_num_threads(1)
    problem, xt, target, truth, pressure = truth_problem(args.work)
    out = json.loads(args.output.read_text()) if args.output.exists() else {}
    out |= {"benchmark": "pinn_twin_host_split", "unknowns_at_truth": truth, "pressure": pressure}
    tanh_network = problem.network
    for kind in args.networks:
        problem.network = tanh_network if kind == "tanh" else drug_network(kind, problem.geometry, 0)
        load = os.getloadavg()
        result = diagnosis.supervised_fit(problem, xt, target, args.steps)
        out.setdefault("supervised", {})[kind + args.suffix] = result | {"load_average": {"before": load, "after": os.getloadavg()}}
        print(kind, json.dumps(result, indent=1), flush=True)
        args.output.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
