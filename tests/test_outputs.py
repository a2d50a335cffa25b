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


def test_overwrite_replaces_only_what_lmpress_wrote(tmp_path):
    from lmpress.outputs import MARKER, atomic_output, check_output_path

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(LmpressError, match=f"has no {MARKER} marker"):
        check_output_path(mine, overwrite=True)
    ours = tmp_path / "ours"
    with atomic_output(ours, overwrite=False) as tmp:
        (tmp / "x").write_text("1")
    assert (ours / MARKER).is_file()
    check_output_path(ours, overwrite=True)  # ours: may be replaced
    f = tmp_path / "m.gguf"
    f.write_text("not a gguf")
    with pytest.raises(LmpressError, match="does not start with"):
        check_output_path(f, overwrite=True, is_dir=False, magic=b"GGUF")
    f.write_bytes(b"GGUF....")
    check_output_path(f, overwrite=True, is_dir=False, magic=b"GGUF")


@pytest.mark.parametrize("out,rel", [("src", "is"), (".", "contains"), ("src/q", "lies inside")])
def test_an_output_is_never_an_input(tmp_path, out, rel):
    from lmpress.outputs import check_not_an_input

    (tmp_path / "src").mkdir()
    with pytest.raises(LmpressError, match=f"{rel} the input"):
        check_not_an_input(tmp_path / out, [tmp_path / "src"])
    check_not_an_input(tmp_path / "other", [tmp_path / "src", "org/hub-id"])


def test_temporaries_of_dead_runs_are_removed(tmp_path):
    from lmpress.outputs import remove_stale_temporaries

    out = tmp_path / "q"
    dead, legacy = tmp_path / ".q.tmp-999999999-ab", tmp_path / ".q.tmp-k3j2"
    alive = tmp_path / f".q.tmp-{os.getpid()}-cd"  # a run in progress: kept
    other = tmp_path / ".qq.tmp-999999999-ab"  # another output's: kept
    for p in (dead, legacy, alive, other):
        p.mkdir()
    remove_stale_temporaries(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])
    # killed between moving the old output aside and renaming the new one in
    old = tmp_path / ".q.old-999999999"
    old.mkdir()
    (old / "x").write_text("previous")
    remove_stale_temporaries(out)
    assert (out / "x").read_text() == "previous"
