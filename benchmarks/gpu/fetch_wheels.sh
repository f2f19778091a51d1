#!/usr/bin/env bash
# On the CPU machine: put what benchmarks/gpu/gpu_check.sh needs on the GPU machine into .whl/ (gitignored; carried
# with `carry: [".whl"]`; the working tree and .whl travel together, 64 MiB at most): the wheels of the
# distributions in benchmarks/gpu/gpu_wheels.txt (what the GPU image lacks), recompressed with LZMA by
# benchmarks/gpu/repack_wheels.py (the wheels 33 MiB instead of 58; SimpleITK's from 53 to 29 MB), and a copy of the
# LIDC subset (2 MiB; ../shared/data does not travel): about 35 MiB in all instead of about 60.
#   bash benchmarks/gpu/fetch_wheels.sh             # downloads about 60 MB, recompresses (a few CPU minutes)
#   bash benchmarks/gpu/fetch_wheels.sh --dry_run   # what it would fetch, from .venv's versions; no network, no files
# The versions are the ones installed in .venv (the ones the test suite ran with); binary wheels are
# for the GPU image's CPython 3.12 on x86-64, pure-Python ones are built from their sdists.
set -euo pipefail
cd "$(dirname "$0")/../.."   # the repository root
DRY_RUN=0
[ "${1:-}" = "--dry_run" ] && DRY_RUN=1
PY=${PYTHON:-.venv/bin/python}
DEST=.whl
LIDC=../shared/data/lidc_subset
LIMIT_MIB=${FETCH_WHEELS_LIMIT_MIB:-44}   # leaves 20 MiB of the 64 for the working tree
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"

# "name kind version" per line of gpu_wheels.txt; version "-" when .venv lacks the distribution
LIST=$("$PY" - benchmarks/gpu/gpu_wheels.txt <<'PYEOF'
import importlib.metadata as md, sys
for line in open(sys.argv[1]):
    parts = line.split("#")[0].split()
    if parts:
        try:
            version = md.version(parts[0])
        except md.PackageNotFoundError:
            version = "-"
        print(parts[0], parts[1], version)
PYEOF
)
missing=$(awk '$3 == "-" {print $1}' <<<"$LIST")
[ -z "$missing" ] || { echo "fetch_wheels: not installed in $PY's environment: $missing" >&2; exit 1; }

if [ "$DRY_RUN" = 1 ]; then
    while read -r name kind v; do echo "fetch_wheels: would fetch $name==$v ($kind wheel)"; done <<<"$LIST"
    for f in lidc_subset.npz lidc.json; do
        [ -f "$LIDC/$f" ] && echo "fetch_wheels: would copy $LIDC/$f" || echo "fetch_wheels: $LIDC/$f is missing" >&2
    done
    echo "fetch_wheels: then recompress with LZMA (benchmarks/gpu/repack_wheels.py) and check $DEST <= $LIMIT_MIB MiB"
    exit 0
fi

rm -rf "$DEST" && mkdir -p "$DEST/data"   # one version of each package: two would stop the install there
while read -r name kind v; do
    if [ "$kind" = binary ]; then
        # shellcheck disable=SC2086
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
            -d "$DEST" "$name==$v"
    else
        "$PY" -m pip wheel -q --no-deps -w "$DEST" "$name==$v"
    fi
done <<<"$LIST"
"$PY" benchmarks/gpu/repack_wheels.py "$DEST"/*.whl
cp "$LIDC/lidc_subset.npz" "$LIDC/lidc.json" "$DEST/data/"
bytes=$(du -sb "$DEST" | cut -f1)
tree=$( (git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null || true) | tail -n 1 | cut -f1)
echo "fetch_wheels: $(ls "$DEST"/*.whl | wc -l) wheels and the LIDC subset in $DEST ($((bytes >> 20)) MiB;" \
     "with the working tree $(((bytes + tree) >> 20)) of the 64 MiB that travel)"
if [ "$bytes" -gt $((LIMIT_MIB << 20)) ]; then
    echo "fetch_wheels: $DEST is over $LIMIT_MIB MiB; with the working tree it may not travel" >&2; exit 1
fi
