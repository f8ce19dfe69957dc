"""exp.files(...) against the hostile-input tables (tests/hostile_inputs.py): a bad
argument fails at the call with a clear error and writes nothing (the run is not
even started), and nothing is ever written outside the run's folder. A full disk
mid-copy (a real 1 MiB tmpfs, as in test_disk_faults.py) is a StorageError at the
call and leaves no record pointing at a partial file."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest
from hostile_inputs import (
    BAD_FILE_IDS,
    BAD_FILE_METADATA,
    BAD_FILE_NAMES,
    BAD_FILE_PREFIXES,
    BAD_FILE_TAGS,
    BAD_LABELS,
    BAD_PATH_PARTS,
)

import mldash
from mldash import _filestore


def _exp(root):
    return mldash.Experiment("files/hostile", root=root)


def _source(root) -> str:
    path = Path(root).parent / "source.bin"
    path.write_bytes(b"x" * 100)
    return str(path)


def _parts(rows):
    """Path-part rows as prefix parts ('/models/<bad>'), skipping those a prefix reads differently."""
    for value, error, message in rows:
        if isinstance(value, str) and ("/" in value or value.strip() == "" or value == "."):
            continue  # "/" separates parts; the prefix table covers these
        yield (f"/models/{value}" if isinstance(value, str) else value), error, message


# field -> a call putting ``v`` there
FIELDS = {
    "prefix": (BAD_FILE_PREFIXES + list(_parts(BAD_PATH_PARTS)),
               lambda root, v: _exp(root).files(file_path=_source(root), prefix=v).save()),
    "dir (0.11)": (BAD_FILE_PREFIXES, lambda root, v: _exp(root).files(v).upload(_source(root))),
    "file name (to=)": (BAD_FILE_NAMES, lambda root, v: _exp(root).files(file_path=_source(root)).save(to=v)),
    "helper file name": (BAD_FILE_NAMES, lambda root, v: _exp(root).files().save_json({"a": 1}, v)),
    "metadata": (BAD_FILE_METADATA, lambda root, v: _exp(root).files(file_path=_source(root), metadata=v).save()),
    "metadata at save()": (BAD_FILE_METADATA, lambda root, v: _exp(root).files(file_path=_source(root)).save(metadata=v)),
    "tags": (BAD_FILE_TAGS + [([v], e, m) for v, e, m in BAD_LABELS],
             lambda root, v: _exp(root).files(file_path=_source(root), tags=v).save()),
    "description": ([(5, TypeError, "must be a str"), ("nul\x00", ValueError, "NUL"), ("\ud800", ValueError, "not valid Unicode")],
                    lambda root, v: _exp(root).files(file_path=_source(root), description=v).save()),
    "file_id": (BAD_FILE_IDS, lambda root, v: _exp(root).files(file_id=v).download(dest_path="x")),
    "file_path": ([("a\x00b", ValueError, "NUL"), (5, TypeError, "must be a str")],
                  lambda root, v: _exp(root).files(file_path=v).save()),
}
CASES = [(field, value, error, message) for field, (rows, _) in FIELDS.items() for value, error, message in rows]


def _snapshot(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("field,value,error,message", CASES, ids=[f"{c[0]}-{c[1]!r}"[:70] for c in CASES])
def test_a_bad_argument_fails_at_the_call_and_writes_nothing(root, field, value, error, message):
    os.makedirs(root, exist_ok=True)
    source = _source(root)
    around = _snapshot(Path(root).parent)
    with pytest.raises(error, match=message):
        FIELDS[field][1](root, value)
    assert _snapshot(Path(root).parent) == around, "something was written"
    assert Path(source).read_bytes() == b"x" * 100


# A source that cannot be saved: (make it under tmp, error, message). A missing file
# and a directory are also ValueErrors, as ml-dash raises them.
SOURCES = [
    ("missing", lambda tmp: str(tmp / "nope.pt"), FileNotFoundError, "no such file"),
    ("missing (ValueError)", lambda tmp: str(tmp / "nope.pt"), ValueError, "no such file"),
    ("directory", lambda tmp: str(tmp), IsADirectoryError, "is a directory"),
    ("directory (ValueError)", lambda tmp: str(tmp), ValueError, "is a directory"),
    ("fifo", lambda tmp: (os.mkfifo(tmp / "pipe"), str(tmp / "pipe"))[1], ValueError, "not a regular file"),
    ("dangling link", lambda tmp: (os.symlink(tmp / "gone", tmp / "link"), str(tmp / "link"))[1], FileNotFoundError, "no such file"),
]


@pytest.mark.parametrize("make,error,message", [s[1:] for s in SOURCES], ids=[s[0] for s in SOURCES])
def test_a_source_that_is_not_a_file_fails_at_the_call(root, tmp_path, make, error, message):
    source = make(tmp_path / "src" if (tmp_path / "src").mkdir() is None else tmp_path)
    exp = _exp(root)
    with pytest.raises(error, match=message):
        exp.files(file_path=source).save()
    assert not os.path.exists(exp.path)


def test_an_unreadable_source_is_the_caller_s_permission_error(root, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    source = tmp_path / "secret.bin"
    source.write_bytes(b"x")
    source.chmod(0)
    with pytest.raises(PermissionError):
        _exp(root).files(file_path=str(source)).save()


def test_no_name_or_prefix_reaches_the_disk(root, tmp_path):
    """File names and prefixes are labels in the index: on disk there are only blobs
    named by their hash, so even an accepted odd name stays a string."""
    exp = _exp(root)
    record = exp.files(prefix="/a b/ünï", tags=["x/y", ".5"]).save_blob(b"z", "we ird name (1).pt")
    on_disk = {p.name for p in Path(exp.path, "files").rglob("*")}
    assert not any("ird" in name or "ünï" in name for name in on_disk)
    assert exp.files(prefix="/a b/ünï").list() == [record]
    exp.finish()


# ---- a full disk mid-copy ---------------------------------------------------------------
def _wait_for_space(disk: Path, timeout: float = 5.0) -> None:
    """The kernel may take a moment to count the pages of an unlinked file as free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = os.statvfs(disk)
        if info.f_bavail * info.f_frsize >= 512 << 10:
            return
        time.sleep(0.01)


def _leftovers(exp) -> list[str]:
    folder = Path(exp.path, "files")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".files.jsonl.lock")


@pytest.mark.parametrize("size", [2 << 20, 6 << 20], ids=["copied in one go", "streamed by sendfile"])
def test_a_full_disk_mid_copy_is_a_storage_error_at_the_call_and_records_nothing(small_disk, tmp_path, size):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(size))
    exp = mldash.Experiment("full/files", root=small_disk / "runs", flush_interval=0.05)
    keep = exp.files().save_text("small", "small.txt")
    with pytest.raises(mldash.StorageError, match="No space left on device.*nothing was recorded"):
        exp.files(file_path=str(source), prefix="/big").save()
    assert exp.files.list() == [keep]
    assert _leftovers(exp) == ["blobs/sha256/" + keep["checksum"][:2] + "/" + keep["checksum"][2:], "files.jsonl"]
    with pytest.raises(mldash.StorageError, match="No space left"):
        exp.files(file_path=str(source), prefix="/big").save(wait=False)  # the copy fails at the call too
    _wait_for_space(small_disk)
    assert exp.files().save_text("still works", "after.txt")["sizeBytes"] == 11
    with contextlib.suppress(mldash.StorageError):
        exp.finish()


def test_a_full_disk_while_a_helper_writes_is_a_storage_error(small_disk):
    exp = mldash.Experiment("full/helper", root=small_disk / "runs", flush_interval=0.05)
    with pytest.raises(mldash.StorageError, match="No space left"):
        exp.files().save_blob(os.urandom(3 << 20), "big.bin")
    assert exp.files.list() == [] and _leftovers(exp) == []
    with contextlib.suppress(mldash.StorageError):
        exp.finish()


def test_nothing_is_written_outside_the_run_folder(root, tmp_path):
    exp = _exp(root)
    exp.start().flush()
    before = _snapshot(tmp_path)
    source = _source(root)
    exp.files(file_path=source, prefix="/a").save()
    exp.files(prefix="/b").save_json({"k": 1}, "c.json")
    after = _snapshot(tmp_path) - before - {str(Path(source).relative_to(tmp_path))}
    run = str(Path(exp.path).relative_to(tmp_path))
    assert after and all(p.startswith(run + "/files") for p in after), sorted(after)
    exp.finish()
    assert _filestore.list_files(exp.path)
