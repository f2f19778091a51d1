#!/usr/bin/env bash
# On the CPU machine: put what benchmarks/gpu_check.sh needs on the GPU machine into .whl/ (gitignored;
# carried with `carry: [".whl"]`, at most ~60 MiB): wheels of the runtime dependencies its image lacks
# (KINDS.md lists what it has: torch, numpy, scipy, pandas, scikit-image, tqdm, pytest, ... are there)
# and a copy of the LIDC subset (../shared/data does not travel).
#   bash benchmarks/fetch_wheels.sh
# The versions are the ones installed in .venv (the ones the test suite ran with); binary wheels are
# for the GPU image's CPython 3.12 on x86-64, pure-Python ones are built from their sdists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEST=.whl
# imported by the project (SimpleITK, batchgenerators, acvl_utils, dynamic_network_architectures), by acvl_utils
# at import time (blosc2, connected-components-3d) and by blosc2 at import time (numexpr, ndindex, pydantic with
# pydantic-core, annotated-types, typing-inspection); the GPU image (device KINDS.md) has the rest (msgpack, httpx,
# rich, threadpoolctl, timm, einops, ...). Installed with --no-deps; benchmarks/import_check.py proves the set there.
BINARY="SimpleITK blosc2 numexpr ndindex connected-components-3d pydantic-core"
PURE="batchgenerators acvl-utils dynamic-network-architectures"
PURE_WHEELS="pydantic annotated-types typing-inspection"   # pure-Python wheels on the registry, fetched as they are
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

version() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }

rm -rf "$DEST" && mkdir -p "$DEST/data"   # one version of each package: two would stop the install there
for p in $BINARY; do
    v=$(version "$p"); [ -n "$v" ] || { echo "fetch_wheels: $p is not installed in $PY's environment" >&2; exit 1; }
    # shellcheck disable=SC2086
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
        -d "$DEST" "$p==$v"
done
for p in $PURE_WHEELS; do
    v=$(version "$p"); [ -n "$v" ] || { echo "fetch_wheels: $p is not installed in $PY's environment" >&2; exit 1; }
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$DEST" "$p==$v"
done
for p in $PURE; do
    v=$(version "$p"); [ -n "$v" ] || { echo "fetch_wheels: $p is not installed in $PY's environment" >&2; exit 1; }
    "$PY" -m pip wheel -q --no-deps -w "$DEST" "$p==$v"
done
cp ../shared/data/lidc_subset/lidc_subset.npz ../shared/data/lidc_subset/lidc.json "$DEST/data/"
size=$(du -sm "$DEST" | cut -f1)
echo "fetch_wheels: $(ls "$DEST"/*.whl | wc -l) wheels and the LIDC subset in $DEST ($size MiB)"
if [ "$size" -gt 60 ]; then echo "fetch_wheels: $DEST is over 60 MiB; it would not travel with the tree" >&2; exit 1; fi
