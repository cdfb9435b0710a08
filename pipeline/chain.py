"""The chain: every stage in the order `run` runs them. Each stage declares itself beside its code (name, the stages
it needs, its config keys, what it reads, writes and records: pipeline.engine.stage.Stage); this table only orders
them, and no stage imports it."""

from __future__ import annotations

from .config import Config
from .core.names import runs
from .engine.stage import Stage
from .stages import benchmark, bundle, compress, convert, explain, export, litert, report, train

STAGES: dict[str, Stage] = {s.name: s for s in [
    train.STAGE, export.STAGE, convert.STAGE, litert.STAGE, compress.QUANTIZE, compress.PRUNE_STRUCTURED,
    compress.PRUNE_MAGNITUDE, explain.STAGE, benchmark.STAGE, report.STAGE, bundle.STAGE]}


def stages_for(cfg: Config) -> list[Stage]:
    """The chain `run` runs for this config, in order."""
    return [s for name, s in STAGES.items() if runs(name, cfg)]
