"""Import check of benchmarks/gpu/gpu_check.sh, right after the offline install and before any GPU minute is spent.

1. Every module of the project (diffoseg_auto, planners, dataset_conversion) is imported: that pulls in each
   third-party module as deep as the code uses it (acvl_utils.cropping_and_padding.bounding_boxes imports
   blosc2, which imports ndindex, msgpack, httpx and rich; blosc2 4.x no longer needs numexpr); a top-level ``import acvl_utils`` does not.
2. Every bundled distribution (benchmarks/gpu/gpu_wheels.txt, or the wheels in --wheels) and each requirement it
   declares (through the bundled ones, recursively) must be installed, and its top-level modules must import;
   with --wheels the installed version must be the wheel's (not an older copy in the image). Requirements in
   NOT_IMPORTED are only reported: the check confirms that step 1 did not import them.
Version conflicts with what the image has (e.g. timm) are warnings. Exit 1 with one line per problem.

    python benchmarks/gpu/check_imports.py --wheels .whl --json $OUT/imports.json
    python benchmarks/gpu/check_imports.py            # the distributions of gpu_wheels.txt in this environment
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import json
import pkgutil
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("diffoseg_auto", "planners", "dataset_conversion")
WHEEL_LIST = Path(__file__).with_name("gpu_wheels.txt")
# declared by a bundled distribution, never imported on the project's code paths: {name: (its modules, why)}
NOT_IMPORTED = {
    "pydantic": (("pydantic",), "blosc2 imports it lazily, in ctable/schema only, which acvl_utils does not use"),
    "future": (("future", "past"), "batchgenerators declares it (Python 2 compatibility) and never imports it"),
    "unittest2": (("unittest2",), "batchgenerators declares it and never imports it"),
    "connected-components-3d": (("cc3d",), "acvl_utils imports it in instance_segmentation only, unused here"),
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bundled_distributions(wheels: Path | None) -> dict[str, str | None]:
    """{normalized name: the wheel's version (None without --wheels)}."""
    if wheels is not None:
        found = {}
        for w in sorted(wheels.glob("*.whl")):
            name, version = w.name.split("-")[:2]
            found[normalize(name)] = version
        return found
    lines = (line.split("#")[0].split() for line in WHEEL_LIST.read_text().splitlines())
    return {normalize(parts[0]): None for parts in lines if parts}


def top_level_modules() -> dict[str, list[str]]:
    """{normalized distribution name: its top-level import names}."""
    modules: dict[str, list[str]] = {}
    for module, dists in md.packages_distributions().items():
        for d in dists:
            modules.setdefault(normalize(d), []).append(module)
    return modules


def import_project(problems: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    count = 0
    for pkg in PROJECT_PACKAGES:
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, pkg + ".", onerror=lambda name: problems.append(
                f"{name}: import failed")):
            try:
                importlib.import_module(info.name)
                count += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the check
                problems.append(f"{info.name}: {type(e).__name__}: {e}")
    return count


def check_distributions(bundled: dict[str, str | None], problems: list[str], warnings: list[str]) -> tuple[dict, dict]:
    """({distribution: version, modules, bundled}, {declared requirement left out: why})."""
    modules = top_level_modules()
    report, left_out, todo, seen = {}, {}, list(bundled), set()
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            problems.append(f"{name}: not installed")
            continue
        if bundled.get(name) and bundled[name] != version:
            problems.append(f"{name}: {version} is imported, the bundled wheel is {bundled[name]} (an older copy first "
                            "on the path?)")
        for module in modules.get(name, []):
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{name}: import {module}: {type(e).__name__}: {e}")
        report[name] = {"version": version, "modules": sorted(modules.get(name, [])), "bundled": name in bundled}
        if name not in bundled:
            continue
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = normalize(req.name)
            if dep in NOT_IMPORTED:
                left_out[dep] = NOT_IMPORTED[dep][1]
                continue
            try:
                have = md.version(dep)
            except md.PackageNotFoundError:
                problems.append(f"{name} needs {text}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                warnings.append(f"{name} asks for {text}; {have} is installed")
            todo.append(dep)
    for dep, (names, why) in NOT_IMPORTED.items():
        loaded = [m for m in names if m in sys.modules]
        if loaded:
            problems.append(f"{dep}: imported ({', '.join(loaded)}) although NOT_IMPORTED says: {why}")
    return report, left_out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wheels", type=Path, default=None, help="the bundled wheels (default: gpu_wheels.txt's names)")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    problems: list[str] = []
    warnings: list[str] = []
    n = import_project(problems)
    dists, left_out = check_distributions(bundled_distributions(a.wheels), problems, warnings)
    report = {"project_modules": n, "distributions": dists, "declared_not_imported": left_out, "warnings": warnings,
              "problems": problems}
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    for w in warnings:
        print(f"check_imports: warning: {w}")
    for problem in problems:
        print(f"check_imports: error: {problem}", file=sys.stderr)
    bundled = ", ".join(f"{k} {v['version']}" for k, v in dists.items() if v["bundled"])
    print(f"check_imports: {n} project modules, {len(dists)} distributions ({bundled} bundled): "
          f"{'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
