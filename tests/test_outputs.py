import os

import pytest

from lmpress.errors import LmpressError


@pytest.mark.parametrize("is_dir", [True, False])
def test_atomic_output_replaces_only_on_success(tmp_path, is_dir):
    from lmpress.outputs import atomic_output

    out = tmp_path / "sub" / ("d" if is_dir else "f.bin")

    def write(tmp, text):
        (tmp / "x" if is_dir else tmp).write_text(text)

    def read():
        return (out / "x" if is_dir else out).read_text()

    with atomic_output(out, overwrite=False, is_dir=is_dir) as tmp:  # creates sub/
        write(tmp, "old")
    with pytest.raises(LmpressError, match="already exists; pass --overwrite"):
        with atomic_output(out, overwrite=False, is_dir=is_dir):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output(out, overwrite=True, is_dir=is_dir) as tmp:
            write(tmp, "half")
            raise RuntimeError
    assert read() == "old"
    with atomic_output(out, overwrite=True, is_dir=is_dir) as tmp:
        write(tmp, "new")
    assert read() == "new"
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp or old copies
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == (0o777 if is_dir else 0o666) & ~umask
    with pytest.raises(
        LmpressError, match="exists and is a " + ("directory" if is_dir else "file")
    ):
        with atomic_output(out, overwrite=True, is_dir=not is_dir):
            pass
