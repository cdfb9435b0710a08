"""The run's artifacts by name, and which of them each job takes: the report's rows (`declared_rows`), the rows
explain explains, the files bundle may ship, the compressed models' names, a repaired file's name. One small module
that imports no stage, so the stage table and every stage can share it."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from . import records
from .layout import Layout
from .precision import format_of, is_int8_tflite

# our onnx2tf variant name -> the suffix onnx2tf gives the file
VARIANTS = {"fp32": "float32", "fp16": "float16", "dynamic_range": "dynamic_range_quant", "int8": "full_integer_quant"}
# the stages `run` leaves out when their switch is off
SWITCHES = {"litert": "run_litert", "prune_structured": "run_structured", "prune_magnitude": "run_magnitude"}


def runs(stage: str, cfg) -> bool:
    """Whether `run` runs this stage for cfg."""
    return getattr(cfg, SWITCHES[stage]) if stage in SWITCHES else True


def magnitude_name(cfg) -> str:
    return f"pruned{round(cfg.prune_ratio * 100)}"


def structured_name(cfg) -> str:
    return f"structured{round(cfg.structured_ratio * 100)}"


def fallback_path(int8: Path) -> Path:
    """The repaired sibling of an int8 file (quant_fallback=auto): some layers in float."""
    return int8.with_name(f"{int8.stem}_fallback{int8.suffix}")


def existing(layout: Layout, *int8: Path) -> list[Path]:
    """The repaired files that exist for these int8 rows: they are rows only when made."""
    return [fallback_path(p) for p in int8 if layout.record(fallback_path(p)).is_file()]


def rel(layout: Layout, *paths: Path) -> list[str]:
    return [layout.rel(p) for p in paths]


# --- each stage's rows -----------------------------------------------------------------------------------------

def onnx2tf_files(layout: Layout, prefix: str = "") -> list[Path]:
    """onnx2tf's files (all four variants, or fp32 and int8 of a compressed model), and the int8 file's repair when
    quant_fallback made one."""
    files = [layout.tflite(f"{prefix}{v}") for v in (VARIANTS if not prefix else ("fp32", "int8"))]
    return [*files, *existing(layout, layout.tflite(f"{prefix}int8"))]


def nncf_int8_files(layout: Layout, name: str) -> list[Path]:
    """NNCF's PT2E int8 through litert-torch, and its repaired sibling when quant_fallback made one."""
    return [layout.tflite(name), *existing(layout, layout.tflite(name))]


def litert_files(layout: Layout) -> list[Path]:
    return [layout.tflite("fp32_litert"), *nncf_int8_files(layout, "nncf_int8")]


def ptq_files(layout: Layout) -> list[Path]:
    """NNCF's PTQ QDQ ONNX, and its accuracy-controlled repair when quant_fallback made one."""
    return [layout.quant("ptq_int8.onnx"), *existing(layout, layout.quant("ptq_int8.onnx"))]


def qat_files(layout: Layout, cfg) -> list[Path]:
    if not cfg.qat:
        return []
    return [layout.quant("qat_int8.onnx"), *onnx2tf_files(layout, "qat_"),
            *(nncf_int8_files(layout, "qat_nncf_int8") if cfg.run_litert else [])]


def derived_files(layout: Layout, name: str, cfg) -> list[Path]:
    """The files a compressed checkpoint becomes: its checkpoint and ONNX export (intermediates), then the TFLite
    rows: onnx2tf's fp32 and int8, and NNCF's PT2E int8 through litert-torch."""
    return [layout.quant(f"{name}.pt"), layout.quant(f"{name}.onnx"), *onnx2tf_files(layout, f"{name}_"),
            *(nncf_int8_files(layout, f"{name}_nncf_int8") if cfg.run_litert else [])]


def stage_rows(layout: Layout, cfg) -> dict[str, list[str]]:
    """The artifacts each building stage records (its rows in the report), in the chain's order."""
    return {"export": rel(layout, layout.onnx), "convert": rel(layout, *onnx2tf_files(layout)),
            "litert": rel(layout, *litert_files(layout)),
            "quantize": rel(layout, *ptq_files(layout), *qat_files(layout, cfg)),
            "prune_structured": rel(layout, *derived_files(layout, structured_name(cfg), cfg)[2:]),
            "prune_magnitude": rel(layout, *derived_files(layout, magnitude_name(cfg), cfg)[2:])}


def declared_rows(layout: Layout, cfg) -> list[str]:
    """The artifacts the run's stages make: exactly the report's rows."""
    return [r for stage, rows in stage_rows(layout, cfg).items() if runs(stage, cfg) for r in rows]


# --- what explain and bundle take ----------------------------------------------------------------------------

def explained_rows(layout: Layout, cfg) -> list[str]:
    """The run's int8 TFLite rows that were built: each gets explained."""
    return [r for r in declared_rows(layout, cfg)
            for build in [records.read(layout, r).get("build") or {}]
            if build.get("status") == "ok" and is_int8_tflite(format_of(Path(r)), build.get("precision"))]


def bundle_candidates(layout: Layout, cfg) -> list[str]:
    """The run's declared .tflite artifacts whose stem matches a comma-separated glob of bundle_models (`*`: all)."""
    globs = [p.strip() for p in cfg.bundle_models.split(",") if p.strip()] or ["*"]
    tflite = [r for r in declared_rows(layout, cfg) if r.endswith(".tflite")]
    return [r for r in tflite if any(fnmatch.fnmatch(Path(r).stem, g) for g in globs)]


def bundle_chosen(layout: Layout, cfg) -> list[str]:
    """The candidates that were built and passed every gate, max_size_mib's included: a file that failed a gate, or
    was checked against nothing, is not shipped."""
    return [r for r in bundle_candidates(layout, cfg)
            if records.built(layout, r) and records.passed(layout, r, cfg.max_size_mib)]
