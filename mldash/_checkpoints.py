"""Checkpoint records, and the checkpoint files a run keeps (``exp.checkpoint(..., upload=True)``).

A record is checked and made plain JSON at the call. With ``upload``, the file (or every
file of a checkpoint folder, as Hugging Face saves them) is copied into the run's file
store in the background (``files.py``), and the record, naming the stored files, is
written once the last copy is complete: a record never points at a partial copy.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from typing import Any, Callable

from . import _codec
from ._checks import check_text
from ._filestore import track
from .params import encode_record

FILES_PREFIX = "/checkpoints"  # where uploaded checkpoints go in exp.files()


def make_record(path: Any, step: Any, info: dict, now: float) -> dict:
    """The record of ``exp.checkpoint(path, step=step, **info)``, checked, as plain JSON."""
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"checkpoint path must be a str or os.PathLike of str, not {type(path).__name__}")
    check_text(path, "checkpoint path", nul=False)
    if step is not None and (step.__class__ is bool or not isinstance(step, int) or step < 0):
        raise TypeError(f"checkpoint step must be an int >= 0 or None, got {step!r}")
    record = {"timestamp": now, "path": path, "step": step}
    record.update(info)
    # Parsed back so the record stored is plain JSON (it is kept in experiment.json too).
    return _codec.loads(encode_record(record, "checkpoint record", nul=False))


def save_files(files: Any, path: str, prefix: str, metadata: dict | None = None) -> list:
    """Save the file at ``path`` into ``prefix`` of the run's files, or a folder's files
    under ``prefix/<folder name>/...``, in the background: their futures."""
    if not os.path.isdir(path):
        return [files(prefix=prefix, metadata=metadata).save(path, wait=False)]
    base = os.path.basename(os.path.normpath(path)) or "checkpoint"
    found = []
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        rel = os.path.relpath(folder, path)
        where = "/".join(p for p in (prefix.rstrip("/"), base, "" if rel == "." else rel.replace(os.sep, "/")) if p)
        found += [(where, os.path.join(folder, name)) for name in sorted(names)]
    return [files(prefix=where, metadata=metadata).save(source, wait=False) for where, source in found]


def keep_final(files: Any, best: str | None, last: str | None, info: dict | None = None) -> None:
    """At the end of training, keep the best and the last checkpoint in the run's files, as
    ``/checkpoints/best/<name>`` and ``/checkpoints/last/<name>`` (the same bytes are stored
    once), each with ``metadata`` ``{"alias": ..., "source": path, **info}``."""
    for alias, path in (("best", best), ("last", last)):
        if path and os.path.exists(path):
            save_files(files, path, f"{FILES_PREFIX}/{alias}", {"alias": alias, "source": os.path.abspath(path), **(info or {})})


def upload(files: Any, run_path: str, record: dict, write: Callable[[dict], None]) -> None:
    """Copy the checkpoint at ``record["path"]`` into the run's files (``files``: the run's
    ``exp.files``), then ``write(record)`` with ``files`` (each stored file's id, path,
    name, size, checksum) or, should a copy fail, ``upload_error``. Missing and unreadable
    checkpoints fail here, at the call; the copy itself is taken before this returns."""
    futures = save_files(files, record["path"], FILES_PREFIX)
    written: concurrent.futures.Future = concurrent.futures.Future()
    written.set_running_or_notify_cancel()
    track(run_path, written)  # finish() waits until the record is written
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        try:
            stored, errors = [], []
            for future in futures:
                error = future.exception()
                if error is not None:
                    errors.append(f"{type(error).__name__}: {error}")
                else:
                    stored.append({k: future.result().get(k) for k in ("id", "path", "filename", "sizeBytes", "checksum")})
            write({**record, "files": stored, **({"upload_error": "; ".join(errors)[:2000]} if errors else {})})
        except Exception as error:  # on a background thread: say so, as a failed save does
            print(f"mldash: recording the checkpoint {record['path']!r} failed: {error}", file=sys.stderr)
        finally:
            written.set_result(None)

    if not futures:  # an empty folder: recorded, with no files
        left[0] = 1
        one_done(None)
        return
    for future in futures:
        future.add_done_callback(one_done)
