"""Recompress wheels with LZMA (zip method 14), in place, so that .whl/ travels well under the 64 MiB limit.

A wheel is a zip file; pip installs it through Python's zipfile, which reads LZMA members as it reads deflated
ones. The members, their bytes and RECORD (hashes of the uncompressed files) stay as they are. Measured on the
installed files of gpu_wheels.txt's seven distributions, zipped deflated (level 6, as on PyPI) and then
repacked: SimpleITK 2.5.7 (a 272 MB library) 52.8 -> 28.8 MB, blosc2 6.7 -> 5.3 MB, all seven 57.8 -> 33.3 MiB.

    python benchmarks/gpu/repack_wheels.py .whl/*.whl
"""
from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path


def repack_lzma(wheel: Path) -> tuple[int, int]:
    """Rewrite ``wheel`` with every member LZMA-compressed; returns its size (bytes) before and after."""
    wheel = Path(wheel)
    before = wheel.stat().st_size
    tmp = wheel.with_name(wheel.name + ".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as dst:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.external_attr = info.external_attr  # permissions (an executable library stays executable)
            member.create_system = info.create_system
            member.compress_type = zipfile.ZIP_LZMA
            with src.open(info) as fin, dst.open(member, "w") as fout:  # streamed: a library can be 272 MB
                shutil.copyfileobj(fin, fout, 1 << 22)
    os.replace(tmp, wheel)
    return before, wheel.stat().st_size


def main(argv: list[str]) -> int:
    total_before = total_after = 0
    for path in argv:
        before, after = repack_lzma(Path(path))
        total_before, total_after = total_before + before, total_after + after
        print(f"repack_wheels: {Path(path).name}: {before / 2**20:.1f} -> {after / 2**20:.1f} MiB")
    print(f"repack_wheels: {len(argv)} wheel(s): {total_before / 2**20:.1f} -> {total_after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
