"""benchmarks/gpu_check.sh --dry_run: the GPU check's code path (CUDA tests, LIDC 2d and 3D toy training of
both stages, the JSON report) on the CPU with tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIDC = ROOT.parent / "shared" / "data" / "lidc_subset" / "lidc_subset.npz"


@pytest.mark.slow
@pytest.mark.skipif(not LIDC.is_file() and not (ROOT / ".whl" / "data" / "lidc_subset.npz").is_file(),
                    reason="LIDC subset not available")
@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_gpu_check_dry_run_writes_the_report(tmp_path: Path, quick: bool):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry_run", *(["--quick"] if quick else [])], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["device"] == "cpu" and report["quick"] is quick
    assert "all modules import" in proc.stdout  # the deep import check ran first
    assert report["cuda_tests"]["exit_code"] == 0 and report["cuda_tests"].get("failed", 0) == 0
    assert report["cuda_tests"].get("skipped", 0) + report["cuda_tests"].get("passed", 0) >= 4  # the cuda-marked tests
    runs = {(r["dataset"], r["stage"]): r for r in report["runs"]}
    assert set(runs) == {("Dataset920_LIDC", 1), ("Dataset920_LIDC", 2), ("Dataset921_Toy3D", 1), ("Dataset921_Toy3D", 2)}
    for (name, stage), r in runs.items():
        assert r["configuration"] == ("2d" if "LIDC" in name else "3d_fullres")
        # the quick check trains ONE 3D step per stage (that the 3D path runs on the device)
        assert r["iterations_timed"] == (1 if quick and "Toy3D" in name else 2) and r["iterations_per_s"] > 0
        assert r["samples_per_s"] == pytest.approx(r["iterations_per_s"] * r["batch_size"], rel=0.02)
        assert r["planned_iterations"] > 0 and r["projected_hours_full_schedule"] > 0
        assert r["peak_gpu_memory_gb"] is None  # no GPU in the dry run
    assert report["total_seconds"] > 0
