"""The run's artifacts by name: onnx2tf's variants, the files each building stage makes (the stages declare which of
them they record: those are the report's rows), the compressed models' names, a repaired file's name. One small
module that imports no stage, so every stage can share it."""

from __future__ import annotations

from pathlib import Path

from .layout import Layout

# our onnx2tf variant name -> the suffix onnx2tf gives the file
VARIANTS = {"fp32": "float32", "fp16": "float16", "dynamic_range": "dynamic_range_quant", "int8": "full_integer_quant"}


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
    return [
        layout.quant("qat_int8.onnx"),
        *onnx2tf_files(layout, "qat_"),
        *(nncf_int8_files(layout, "qat_nncf_int8") if cfg.run_litert else []),
    ]


def derived_files(layout: Layout, name: str, cfg) -> list[Path]:
    """The files a compressed checkpoint becomes: its checkpoint and ONNX export (intermediates), then the TFLite
    rows: onnx2tf's fp32 and int8, and NNCF's PT2E int8 through litert-torch."""
    return [
        layout.quant(f"{name}.pt"),
        layout.quant(f"{name}.onnx"),
        *onnx2tf_files(layout, f"{name}_"),
        *(nncf_int8_files(layout, f"{name}_nncf_int8") if cfg.run_litert else []),
    ]
