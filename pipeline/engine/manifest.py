"""The run's bookkeeping, manifest.json: the resolved config, versions and host, each stage's last entry (key, status,
seconds, outputs with sha256, the digests of the record sections it owns), every artifact's size and maker, and the
last run's stage table. Written atomically after every change: an interruption keeps what is done."""

from __future__ import annotations

import json

from ..config import save_config
from ..core.artifacts import atomic_write_json
from ..core.errors import EdgeError
from ..core.layout import Layout


def read_manifest(layout: Layout) -> dict:
    try:
        manifest = json.loads(layout.manifest.read_text())
    except FileNotFoundError:
        manifest = {}
    except (OSError, json.JSONDecodeError) as e:
        raise EdgeError(f"{layout.manifest}: unreadable ({e}); delete it to start the run's bookkeeping afresh") from e
    manifest.setdefault("stages", {})
    manifest.setdefault("artifacts", {})
    return manifest


def begin_run(ctx) -> dict:
    """Save the resolved config and note versions and host in the manifest: what every stage's entry refers to."""
    from ..core.host import host, versions

    save_config(ctx.cfg, ctx.layout.config)
    manifest = read_manifest(ctx.layout)
    manifest.update({"config": ctx.cfg.to_dict(), "versions": versions(), "host": host()})
    if ctx._data is not None:
        manifest["data"] = ctx._data.identity  # what records.stale holds every record's data lineage against
    atomic_write_json(ctx.layout.manifest, manifest)
    return manifest


def update_stage(layout: Layout, name: str, entry: dict) -> None:
    """A stage's entry, and the size, sha256 and maker of each output it vouches for."""
    manifest = read_manifest(layout)
    manifest["stages"][name] = entry
    for rel, sha in entry.get("outputs", {}).items():
        manifest["artifacts"][rel] = {"bytes": layout.path(rel).stat().st_size, "sha256": sha, "stage": name}
    atomic_write_json(layout.manifest, manifest)


def record_run(layout: Layout, table: list, total: float) -> None:
    """The last run's stage table and wall time."""
    manifest = read_manifest(layout)
    manifest["last_run"] = {"stages": [list(row) for row in table], "wall_s": round(total, 2)}
    atomic_write_json(layout.manifest, manifest)


def stage_table(rows: list[tuple[str, str, float | None]], total_s: float | None = None) -> list[str]:
    """(stage, status, seconds) as a markdown table, with the total wall time of the run when known: printed at the
    end of `run` and kept in the report."""
    out = ["| stage | status | s |", "|---|---|---:|"]
    out += [f"| {name} | {status} | {'-' if s is None else f'{s:.1f}'} |" for name, status, s in rows]
    if total_s is not None:
        out.append(f"| **total wall time** | | **{total_s:.1f}** ({int(total_s // 60)} min {total_s % 60:.0f} s) |")
    return out


def manifest_stage_rows(layout: Layout) -> list[tuple[str, str, float | None]]:
    """Each stage as the manifest last recorded it: status and seconds."""
    return [
        (name, entry.get("status", "?"), entry.get("wall_s")) for name, entry in read_manifest(layout)["stages"].items()
    ]
