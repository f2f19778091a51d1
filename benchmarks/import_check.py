"""Import every module the project needs, deeply: each third-party package, the modules that import it at import
time (blosc2 -> pydantic, numexpr, ndindex, msgpack; acvl_utils -> cc3d, blosc2), and one call into each compiled
extension, so that a missing dependency on the GPU machine fails here in seconds with its name, not minutes
later inside a training run. Prints one line per module and exits 1 on the first failure (after listing all)."""
from __future__ import annotations

import importlib
import pkgutil
import sys

# (module, a call that exercises its compiled part)
CHECKS = {
    "torch": lambda m: m.ones(2).sum().item(),
    "numpy": lambda m: m.arange(3).sum(),
    "SimpleITK": lambda m: m.GetArrayFromImage(m.Image(4, 4, m.sitkUInt8)).shape,
    "blosc2": lambda m: len(m.decompress(m.compress(b"x" * 64))),
    "numexpr": lambda m: m.evaluate("1 + 1"),
    "ndindex": lambda m: m.ndindex(slice(0, 2)).raw,
    "pydantic": lambda m: m.VERSION,
    "cc3d": lambda m: m.connected_components(__import__("numpy").ones((2, 2, 2), "uint8")).max(),
    "batchgenerators": None, "acvl_utils": None, "dynamic_network_architectures": None,
    "scipy": None, "pandas": None, "skimage": None, "matplotlib": None, "tqdm": None, "h5py": None,
}
PROJECT = ("diffoseg_auto", "planners", "dataset_conversion")


def main() -> int:
    failed = []
    for name, call in CHECKS.items():
        try:
            m = importlib.import_module(name)
            if call is not None:
                call(m)
            print(f"import_check: {name} {getattr(m, '__version__', '')} ok")
        except Exception as e:  # noqa: BLE001 - report every failure, then fail
            failed.append(name)
            print(f"import_check: {name} FAILED: {type(e).__name__}: {e}")
    for pkg in PROJECT:  # every module of the project, so a lazy third-party import fails here too
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            try:
                importlib.import_module(info.name)
            except Exception as e:  # noqa: BLE001
                failed.append(info.name)
                print(f"import_check: {info.name} FAILED: {type(e).__name__}: {e}")
    import torch

    print(f"import_check: torch {torch.__version__}, cuda {torch.cuda.is_available()}; "
          f"{'all modules import' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
