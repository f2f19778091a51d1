"""benchmarks/gpu/gpu_check.sh --dry_run [--quick]: the GPU check's code path (import check, CUDA tests, LIDC 2d and
3D toy training, the JSON report) on the CPU with tiny sizes; fetch_wheels.sh --dry_run; the LZMA repacking of
the wheel bundle (pip still installs it); the import check's findings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu import check_imports, gpu_compare
from benchmarks.gpu.repack_wheels import repack_lzma

ROOT = Path(__file__).resolve().parents[1]
LIDC = ROOT.parent / "shared" / "data" / "lidc_subset" / "lidc_subset.npz"


@pytest.mark.slow
@pytest.mark.skipif(not LIDC.is_file() and not (ROOT / ".whl" / "data" / "lidc_subset.npz").is_file(),
                    reason="LIDC subset not available")
@pytest.mark.parametrize("quick", [False, True])
def test_gpu_check_dry_run_writes_the_report(tmp_path: Path, quick: bool):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu/gpu_check.sh", "--dry_run", *(["--quick"] if quick else [])], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["device"] == "cpu" and report["quick"] is quick
    assert report["cuda_tests"]["exit_code"] == 0 and report["cuda_tests"].get("failed", 0) == 0
    assert report["cuda_tests"].get("skipped", 0) + report["cuda_tests"].get("passed", 0) >= 4  # the cuda-marked tests
    imports = json.loads((tmp_path / "imports.json").read_text())
    assert imports["problems"] == [] and imports["project_modules"] > 100
    assert {"blosc2", "ndindex", "msgpack"} <= set(imports["distributions"])  # blosc2's own dependencies
    runs = {(r["dataset"], r["stage"]): r for r in report["runs"]}
    toy3d = {("Dataset921_Toy3D", 1)} if quick else {("Dataset921_Toy3D", 1), ("Dataset921_Toy3D", 2)}
    assert set(runs) == {("Dataset920_LIDC", 1), ("Dataset920_LIDC", 2)} | toy3d
    for (name, stage), r in runs.items():
        assert r["configuration"] == ("2d" if "LIDC" in name else "3d_fullres")
        assert r["iterations_timed"] == (1 if quick and "Toy3D" in name else 2) and r["iterations_per_s"] > 0
        assert r["samples_per_s"] == pytest.approx(r["iterations_per_s"] * r["batch_size"], rel=0.02)
        assert r["planned_iterations"] > 0 and r["projected_hours_full_schedule"] > 0
        assert r["peak_gpu_memory_gb"] is None  # no GPU in the dry run
    assert set(report["phase_seconds"]) == {"install_and_imports", "cuda_tests", "training"}
    assert report["total_seconds"] == sum(report["phase_seconds"].values()) > 0


@pytest.mark.slow
def test_fetch_wheels_dry_run_lists_the_bundle_and_writes_nothing(tmp_path: Path):
    proc = subprocess.run(["bash", "benchmarks/gpu/fetch_wheels.sh", "--dry_run"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import importlib.metadata as md

    names = [line.split()[0] for line in (ROOT / "benchmarks" / "gpu" / "gpu_wheels.txt").read_text().splitlines()
             if line.split("#")[0].strip()]
    assert {"SimpleITK", "blosc2", "ndindex", "batchgenerators", "acvl-utils", "dynamic-network-architectures"} <= set(names)
    for name in names:
        assert f"would fetch {name}=={md.version(name)} (" in proc.stdout
    assert "recompress with LZMA" in proc.stdout and not (ROOT / ".whl").exists()


def _wheel(path: Path, payload: bytes) -> Path:
    """A minimal wheel of a module 'tinymod' holding ``payload``, deflated like the wheels on PyPI."""
    files = {"tinymod/__init__.py": b"from pathlib import Path\nDATA = (Path(__file__).parent / 'data.bin').read_bytes()\n",
             "tinymod/data.bin": payload,
             "tinymod-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinymod\nVersion: 1.0\n",
             "tinymod-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + "tinymod-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for name, data in {**files, "tinymod-1.0.dist-info/RECORD": record.encode()}.items():
            z.writestr(name, data)
    return path


@pytest.mark.slow
def test_lzma_repacked_wheel_is_smaller_and_pip_installs_it(tmp_path: Path):
    import numpy as np

    # machine-code-like bytes: a small alphabet of repeated 16-byte words, which LZMA's long window finds
    words = np.random.default_rng(0).integers(0, 256, (512, 16), dtype=np.uint8)
    payload = words[np.random.default_rng(1).integers(0, 512, 40_000)].tobytes()
    wheel = _wheel(tmp_path / "tinymod-1.0-py3-none-any.whl", payload)
    before, after = repack_lzma(wheel)
    assert after < 0.8 * before  # deflate's 32 KiB window misses most repeats
    with zipfile.ZipFile(wheel) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_LZMA}
        assert z.read("tinymod/data.bin") == payload
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([sys.executable, "-c", "import tinymod, sys; sys.stdout.write(str(len(tinymod.DATA)))"],
                           env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=60)
    assert check.stdout == str(len(payload)), check.stderr


def test_import_check_reaches_blosc2_dependencies_and_reports_wrong_or_missing_wheels(tmp_path: Path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    for name in ("blosc2-0.0.1-cp312-abi3-manylinux_2_28_x86_64.whl", "no_such_dist-1.0-py3-none-any.whl"):
        (wheels / name).write_bytes(b"")
    problems, warnings = [], []
    dists, left_out = check_imports.check_distributions(check_imports.bundled_distributions(wheels), problems, warnings)
    assert any(p.startswith("blosc2: ") and "the bundled wheel is 0.0.1" in p for p in problems)
    assert "no-such-dist: not installed" in problems
    # blosc2's declared requirements (those of the installed version: 4.x dropped numexpr) are installed and
    # imported too; pydantic is only reported (imported lazily)
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in distribution("blosc2").requires or []]
    declared = {check_imports.normalize(r.name) for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})}
    imported = declared - set(check_imports.NOT_IMPORTED)
    assert {"ndindex", "msgpack"} <= imported <= set(dists)
    assert not any(dists[d]["bundled"] for d in imported)  # installed here, not in the (empty) bundle
    assert "pydantic" in left_out and "pydantic" not in dists


@pytest.mark.slow
@pytest.mark.skipif(not LIDC.is_file() and not (ROOT / ".whl" / "data" / "lidc_subset.npz").is_file(),
                    reason="LIDC subset not available")
def test_gpu_check_compare_dry_run_trains_predicts_and_tabulates_the_four_methods(tmp_path: Path):
    """gpu_check.sh --compare --dry_run: the one-call GPU comparison's path on the CPU (benchmarks/gpu/gpu_compare.py)."""
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable,
           "GPU_COMPARE_SECONDS": "2"}
    proc = subprocess.run(["bash", "benchmarks/gpu/gpu_check.sh", "--dry_run", "--compare"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "compare" and report["dry_run"] is True and report["device"] == "cpu"
    assert set(report["phase_seconds"]) == {"install_and_imports", "cuda_tests", "compare"}
    methods = report["methods"]
    assert set(methods) == {"DiffOSegTrainer", "ConsensusUNetTrainer", "MultiHeadUNetTrainer", "ProbUNetTrainer"}
    for trainer, m in methods.items():
        assert m["error"] is None and m["prediction"]["seconds_per_image"] > 0
        stages = {"stage1", "stage2"} if trainer == "DiffOSegTrainer" else {"stage1"}
        assert set(m["stages"]) == stages and all(s["iterations_per_s"] > 0 for s in m["stages"].values())
        assert m["projected_hours_full_schedule"] > 0
        assert f"gpu_compare: {trainer}: stage1 " in proc.stdout
    table = (tmp_path / "compare" / "method_comparison.md").read_text()
    assert all(f"| {m} |" in table for m in ("DiffOSeg", "ConsensusUNet", "MultiHeadUNet", "ProbUNet", "inter-rater"))
    assert (tmp_path / "records" / "Dataset930_LIDC" / "2d" / "fold_0.csv").is_file()


def test_gpu_compare_takes_a_raw_folder_a_slices_folder_or_an_npz(env_folders, tmp_path, monkeypatch):
    """gpu_compare.py --data: a raw DatasetXXX_Name folder is linked under its own id; any other folder (an LIDC
    slices tree) or an .npz goes through the LIDC converter as Dataset930; anything else is one line."""
    from dataset_conversion import convert_lidc

    raw = tmp_path / "Dataset123_Subset"
    raw.mkdir()
    (raw / "dataset.json").write_text("{}")
    assert gpu_compare.raw_dataset(raw, False, tmp_path) == 123
    assert (env_folders["raw"] / "Dataset123_Subset").resolve() == raw.resolve()
    converted = []
    monkeypatch.setattr(convert_lidc, "convert_lidc", lambda path, dataset_id, **kw: converted.append(
        (Path(path).name, dataset_id, kw["max_patients"])))
    slices = tmp_path / "LIDC-IDRI-slices"
    slices.mkdir()
    assert gpu_compare.raw_dataset(slices, True, tmp_path) == gpu_compare.DATASET_ID == 930
    npz = tmp_path / "subset.npz"
    np.savez(npz, images=np.zeros((20, 4, 4)))
    gpu_compare.raw_dataset(npz, True, tmp_path)  # the dry run's first crops
    assert converted == [("LIDC-IDRI-slices", 930, gpu_compare.DRY_RUN_PATIENTS), ("lidc_dry.npz", 930, 8)]
    with np.load(tmp_path / "lidc_dry.npz") as z:
        assert z["images"].shape[0] == gpu_compare.DRY_RUN_CROPS
    with pytest.raises(SystemExit, match="give a raw dataset folder"):
        gpu_compare.raw_dataset(tmp_path / "missing.nii.gz", False, tmp_path)
