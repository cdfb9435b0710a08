"""The chain: every stage in the order `run` runs them. Each stage declares itself beside its code
(pipeline.engine.contract.Stage); this table only orders them, and no stage imports it. To add a stage, write its
module and add its STAGE here (docs/architecture.md, "Add a stage")."""

from __future__ import annotations

from .config import Config
from .engine.context import Context
from .engine.contract import Stage
from .stages import (
    benchmark,
    bundle,
    convert,
    explain,
    export,
    fit,
    litert,
    prune_magnitude,
    prune_structured,
    quantize,
    report,
    train,
)

CHAIN: tuple[Stage, ...] = (
    train.STAGE,
    export.STAGE,
    convert.STAGE,
    litert.STAGE,
    quantize.STAGE,
    prune_structured.STAGE,
    prune_magnitude.STAGE,
    fit.STAGE,
    explain.STAGE,
    benchmark.STAGE,
    report.STAGE,
    bundle.STAGE,
)


def stages() -> dict[str, Stage]:
    """The chain's stages by name."""
    return {s.name: s for s in CHAIN}


def stages_for(cfg: Config) -> list[Stage]:
    """The stages `run` runs for this config, in order."""
    return [s for s in CHAIN if s.runs(cfg)]


def context(cfg: Config, data=None) -> Context:
    """A stage's Context that knows the chain (and so the run's rows)."""
    return Context(cfg, data, chain=CHAIN)
