"""Atomic artifact writes (temp file + rename), digests and sizes; light enough for the benchmark worker: no torch."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path

MIB = 2**20


def atomic_write(path: Path, write) -> Path:
    """Call write(tmp_path) then rename onto `path`: readers never see a partial file, a crash leaves the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, data) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2)))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_SHA: dict[tuple, str] = {}


def file_sha(path: Path) -> str | None:
    """sha256 of a file, computed once per file version (path, size, mtime) in this process; None: absent."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = sha256(path)
    return _SHA[key]


SHIPPED = (".tflite", ".onnx")  # the formats an app ships; a torch checkpoint is not downloaded to a phone


def file_facts(path: Path) -> dict:
    """Size in MiB and sha256; for a file an app ships, its gzip size (level 6) too: what a download or an app bundle
    costs (a checkpoint's is skipped: the demo's two 128 MiB checkpoints took 7 s to compress)."""
    data = Path(path).read_bytes()
    shipped = Path(path).suffix in SHIPPED
    return {
        "bytes": len(data),
        "size_mib": len(data) / MIB,
        "gzip_mib": len(gzip.compress(data, 6)) / MIB if shipped else None,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
