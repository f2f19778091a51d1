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


def test_a_writer_without_errno_that_fills_the_disk_is_enospc(tmp_path, monkeypatch):
    """SimpleITK and torch.save raise RuntimeError without errno: their message, or a file system with (almost) no
    free space, makes it the ENOSPC that names the target; any other RuntimeError stays what it is."""
    import errno
    import shutil

    target = tmp_path / "c.nii.gz"

    def failing(message):
        def write(tmp):
            tmp.write_bytes(b"half an image")
            raise RuntimeError(message)
        return write

    with pytest.raises(OSError) as e:
        atomic_write(target, failing("ITK ERROR: NiftiImageIO: No space left on device"), keep_extension=True)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    with pytest.raises(RuntimeError, match="wrong pixel type"):
        atomic_write(target, failing("wrong pixel type"), keep_extension=True)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 << 20, 100 << 20, 0))
    with pytest.raises(OSError) as e:
        atomic_write(target, failing("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
