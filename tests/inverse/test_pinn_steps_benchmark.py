"""benchmarks/pinn_steps.py runs and writes its JSON (smoke size)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pinn_steps.py"


def test_pinn_steps_smoke(tmp_path):
    out = tmp_path / "steps.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--output", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["machine"]["torch_threads"] == 1 and report["versions"]["torch"]
    assert [(row["dtype"], row["collocation_points"]) for row in report["table"]] == [("float32", 128), ("float64", 128)]
    assert all(row["steps_per_s"] > 0 for row in report["table"])
