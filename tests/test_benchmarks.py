"""Smoke tests of the scripts in benchmarks/: they run, write their JSON, and the IFP peer
(scikit-fem + pyamg) solves the same discretisation as hybrid."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script, *args, timeout=300):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_ifp_scaling_smoke(tmp_path):
    pytest.importorskip("skfem")
    pytest.importorskip("pyamg")
    out = tmp_path / "x.json"
    _run("ifp_scaling.py", "--smoke", "--output", out)
    report = json.loads(out.read_text())
    for key in ("machine", "versions", "table", "scaling", "timestamp", "problem", "solvers"):
        assert key in report
    assert report["machine"]["cpu_count"] >= 1 and len(report["machine"]["load_average_before"]) == 3
    assert report["versions"]["petsc"] and report["versions"]["dolfinx"]
    assert report["scaling"]["serial_solve_slope"]["slope"] > 0
    assert len(report["table"]) >= 3
    for row in report["table"]:
        serial, peer, mpi = row["serial"], row["peer"], row["mpi2"]
        assert serial["iterations"] > 0 and serial["solve_s"] > 0 and serial["dofs_per_s"] > 0
        # The closed form is met to discretisation accuracy (coarse smoke meshes).
        assert serial["max_rel_error_vs_closed_form"] < 0.5
        # The peer solves the same linear system: identical size, and the two FEM solutions
        # agree to about the solver tolerance (a different form or mesh gives >= 1e-3).
        assert peer["dofs"] == serial["dofs"]
        assert peer["max_rel_diff_vs_hybrid"] < 1e-6
        assert row["ratio_hybrid_over_peer"]["setup_plus_solve"] > 0
        # The two-rank run solved the same mesh to the same accuracy.
        assert mpi["dofs"] == serial["dofs"]
        assert mpi["max_rel_error_vs_closed_form"] == pytest.approx(
            serial["max_rel_error_vs_closed_form"], rel=1e-3, abs=1e-8)
        assert row["speedup_mpi2"]["solve"] > 0
    disc = [r["serial"] for r in report["table"] if r["shape"] == "disc"]
    errors = [r["max_rel_error_vs_closed_form"] for r in disc]
    assert errors == sorted(errors, reverse=True)   # refining the mesh reduces the error


def test_dce_fit_speed_smoke(tmp_path):
    out = tmp_path / "dce.json"
    _run("dce_fit_speed.py", "--smoke", "--out", out, timeout=600)
    report = json.loads(out.read_text())
    assert report["shape"] == [8, 8, 2]
    assert set(report["results"]) == {"tofts", "extended_tofts", "patlak", "2cxm", "2cum"}
    for model, cases in report["results"].items():
        assert cases["delay_cost_ratio_hybrid"] > 0
        for key in ("no_delay", "delay"):
            hybrid = cases[key]["hybrid"]
            assert hybrid["status"] == "ok" and hybrid["voxels_per_s"] > 0
            assert set(hybrid["accuracy"]) >= set(report["truth_ranges"][model])
            assert ("delay_s" in hybrid["accuracy"]) == (key == "delay")
            for peer in ("osipy", "dcmri"):
                assert cases[key][peer]["status"] in ("ok", "skipped", "unsupported")


def test_transport_literature_smoke(tmp_path):
    out = tmp_path / "literature.json"
    _run("transport_literature.py", "--smoke", "--output", out)
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    for run in report["perivascular"]:
        assert run["min_concentration"][1] >= -1e-12 * max(run["snapshots"][-1]["free_profile_ug_g"])
        for snap in run["snapshots"]:
            free = snap["free_profile_ug_g"]
            # free drug falls away from the wall, so its half-distance is a distance inside the annulus
            assert free[0] > free[-1] > 0
            assert 0 < snap["free_half_distance_um"] < 110
    tsl = report["thermosensitive"]["end_of_heating"]
    # interstitial release can only free drug that has extravasated as liposomes; release in the
    # heated blood adds f c_pL to the free plasma drug at the walls, so it delivers more
    assert tsl["tsl_heat"]["total_ug_g"] > tsl["tsl_heat_interstitial_only"]["total_ug_g"] > 0
    lipo = report["non_triggered"]
    for key in ("bioavailable_fraction_of_tumour_drug", "released_fraction_of_extravasated",
                "cleared_fraction_of_extravasated"):
        assert 0 < lipo[key] < 1
    assert lipo["auc_ratio_liposomal_vs_free"] > 1


def test_transport_performance_smoke(tmp_path):
    out = tmp_path / "performance.json"
    _run("transport_performance.py", "--smoke", "--output", out)
    report = json.loads(out.read_text())
    full = report["full"]
    assert full["steps"] == 2 and full["matrix_assemblies"] == 1   # the second step reuses the matrix
    assert full["first_over_later"] > 1
    assert sum(full["share_of_total"].values()) == pytest.approx(1.0)
    assert all(share >= 0 for key, share in full["share_of_total"].items() if key != "other")
    assert report["slope_log_time_per_step_vs_log_nodes"] is not None


def test_cluster_scaling_never_replaces_a_measured_row_with_a_failed_one():
    import importlib.util
    spec = importlib.util.spec_from_file_location("cluster_scaling", BENCHMARKS / "cluster_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = {"points": [{"study": "strong_8M", "ranks": 8, "hybrid": {}}, {"study": "strong_8M", "ranks": 4,
                                                                          "skipped": "budget"}]}
    module._add_row(report, {"study": "strong_8M", "ranks": 8, "skipped": "budget"})
    module._add_row(report, {"study": "strong_8M", "ranks": 4, "failed": "exit 1"})
    assert report["points"] == [{"study": "strong_8M", "ranks": 8, "hybrid": {}},
                                {"study": "strong_8M", "ranks": 4, "failed": "exit 1"}]
    module._add_row(report, {"study": "strong_8M", "ranks": 8, "hybrid": {"dofs": 1}})
    assert report["points"][-1] == {"study": "strong_8M", "ranks": 8, "hybrid": {"dofs": 1}} and len(report["points"]) == 2


def test_cluster_scaling_smoke(tmp_path):
    """One- and two-rank points of the cluster study: both solvers on the same mesh, the strong
    series on one mesh, the weak series growing with the ranks, JSON and figure written; a second
    run with ``--points --append`` adds its points to the first run's rows in its order, stamped with
    its machine, a re-measured point replacing its row; appending with other settings is refused."""
    out = tmp_path / "cluster.json"
    _run("cluster_scaling.py", "--smoke", "--ranks", "1,2", "--studies", "strong_1M", "--output", out,
         "--scratch", tmp_path, timeout=600)
    _run("cluster_scaling.py", "--smoke", "--points", "weak_250k:2,strong_1M:1,weak_250k:1", "--append",
         "--output", out, "--scratch", tmp_path, timeout=600)
    report = json.loads(out.read_text())
    keys = [(p["study"], p["ranks"]) for p in report["points"]]
    assert keys == [("strong_1M", 2), ("weak_250k", 2), ("strong_1M", 1), ("weak_250k", 1)]   # re-run replaced
    points = dict(zip(keys, report["points"]))
    assert "machine" in points[("strong_1M", 1)] and "machine" not in points[("strong_1M", 2)]
    refused = subprocess.run([sys.executable, str(BENCHMARKS / "cluster_scaling.py"), "--points", "weak_250k:1",
                              "--append", "--output", str(out)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "has smoke" in refused.stderr
    for (study, ranks), p in points.items():
        hybrid, bare = p["hybrid"], p["bare"]
        assert hybrid["dofs"] == bare["dofs"] and bare["converged_reason"] > 0
        assert hybrid["iterations"] > 0 and hybrid["solve_s"] > 0 and p["solve_ratio_hybrid_over_bare"] > 0
        assert len(hybrid["peak_memory_MiB"]["per_rank"]) == ranks and p["memory_per_dof_B"] > 0
        assert hybrid["stages_s_rank0"]["refinement_s"] > 0 and hybrid["fields_bytes"] > 0
        assert hybrid["closed_form_max_error_over_pe"] < 0.5
    assert points[("strong_1M", 1)]["hybrid"]["dofs"] == points[("strong_1M", 2)]["hybrid"]["dofs"]
    assert points[("weak_250k", 2)]["hybrid"]["dofs"] > points[("weak_250k", 1)]["hybrid"]["dofs"]
    assert out.with_suffix(".png").stat().st_size > 0
