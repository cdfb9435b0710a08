"""What every bench script shares: its table written beside the run it read, and the way it ends (an EdgeError is
one line and exit 2). Imported by the scripts as `benchkit` (bench/ is the script's own folder on sys.path)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.core.artifacts import atomic_write_json
from pipeline.core.errors import EdgeError


def write_table(path: Path, table: dict) -> int:
    """The table's JSON, atomically; says where; 0 for the script's exit."""
    print(f"wrote {atomic_write_json(path, table)}")
    return 0


def entry(main: Callable[[list[str]], int]) -> None:
    try:
        sys.exit(main(sys.argv[1:]))
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
