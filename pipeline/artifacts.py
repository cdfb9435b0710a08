"""Atomic artifact writes (temp file + rename), light enough for the benchmark worker: no torch here."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path


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


def file_sizes(path: Path) -> dict:
    """File size and gzip size (level 6) in MiB: what a download or an app bundle costs."""
    data = Path(path).read_bytes()
    return {"size_mib": len(data) / 2**20, "gzip_mib": len(gzip.compress(data, 6)) / 2**20}
