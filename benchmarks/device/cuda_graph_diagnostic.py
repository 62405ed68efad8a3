"""Device diagnostic (run on an H200 on 2026-11-27, the session's third device call, from the
repository root): which trainer settings break the CUDA-graph capture, and graph against eager
estimates, for the 1-D test twins (results/cuda_graph_diagnostic.log)."""
import sys

sys.path.insert(0, "tests/inverse")
import twins  # noqa: E402
from hybrid.inverse import Trainer, TrainingConfig  # noqa: E402



def run(label, make, **kw):
    """One eager and two CUDA-graph trainings of ``make()`` with ``kw``: estimates, graph used, capture messages."""
    out = {}
    for graph in (False, True, True):
        msgs = []
        t = Trainer(make(), TrainingConfig(cuda_graph=graph, device="cuda", dtype="float64", progress_every=0, **kw),
                    progress=msgs.append)
        r = t.run()
        out.setdefault(graph, []).append((r.estimates, r.cuda_graph, [m for m in msgs if "capture" in m]))
    e = out[False][0][0]; g1, used, msgs = out[True][0]; g2 = out[True][1][0]
    for name, (v, _) in e.items():
        print(f"{label}: {name} eager {v!r} graph {g1[name][0]!r} graph again {g2[name][0]!r} "
              f"rel {abs(g1[name][0]-v)/abs(v):.2e} graph_used {used} {msgs[:1]}", flush=True)

ifp = twins.ifp_observations(voxels=16)
rel = twins.release_observations(voxels=8)
base = dict(collocation_points=64)
for label, extra in (("plain", dict(balance="none", resample_every=0)),
                     ("balance", dict(balance_every=10, resample_every=0)),
                     ("resample", dict(balance="none", resample_every=10)),
                     ("both", dict(balance_every=10, resample_every=10))):
    for steps in ((5, 30) if label == "both" else (5,)):
        run(f"ifp {label} {steps}", lambda: twins.ifp_problem(ifp), adam_steps=steps, **base, **extra)
        run(f"release-strong {label} {steps}", lambda: twins.release_problem(rel), adam_steps=steps, **base, **extra)
        run(f"release-weak {label} {steps}", lambda: twins.release_problem(rel), adam_steps=steps, residual_form="weak",
            weak_cells=4, weak_time_cells=5, **base, **extra)
