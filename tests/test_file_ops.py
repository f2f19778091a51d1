"""The one atomic-write implementation (utilities/file_ops.py) and its users."""
from __future__ import annotations

import numpy as np
import pytest

from diffoseg_auto.io.image_io import read_seg, write_seg
from diffoseg_auto.utilities.file_ops import atomic_copy, atomic_write, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")

    def half_write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_copy_replaces_the_whole_file(tmp_path):
    (tmp_path / "src.bin").write_bytes(b"new content")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dst.bin").write_bytes(b"old")
    atomic_copy(tmp_path / "src.bin", tmp_path / "sub" / "dst.bin")
    assert (tmp_path / "sub" / "dst.bin").read_bytes() == b"new content"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["dst.bin"]


def test_image_writes_go_through_atomic_write(tmp_path):
    seg = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    props = {"spacing": [1.0, 2.0], "origin": [0.0, 0.0], "direction": [1.0, 0.0, 0.0, 1.0]}
    write_seg(seg, props, tmp_path / "labels" / "c.nii.gz")
    back, read_props = read_seg(tmp_path / "labels" / "c.nii.gz")
    np.testing.assert_array_equal(back, seg)
    assert read_props["spacing"] == [1.0, 2.0]
    assert [p.name for p in (tmp_path / "labels").iterdir()] == ["c.nii.gz"]
