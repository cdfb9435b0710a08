"""ONNX -> TFLite with onnx2tf: float32, float16, dynamic-range and full-integer int8 (int8 input and output),
calibrated on real training images; each file gated against the ONNX model on the test split."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import atomic_write
from .data import Normalization, normalize
from .errors import EdgeError

# our variant name -> the suffix onnx2tf gives the file
VARIANTS = {"fp32": "float32", "fp16": "float16", "dynamic_range": "dynamic_range_quant", "int8": "full_integer_quant"}
FP32_PARITY = 1e-3  # max |logit difference| vs ONNX
FP16_AGREEMENT = 0.995  # top-1 agreement with ONNX
# onnx2tf looks for this file in its working directory for static-batch RGB inputs and downloads it when absent.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass
class Gate:
    artifact: str
    figure: str
    value: float
    threshold: float
    passed: bool

    def text(self) -> str:
        return (f"{self.artifact}: {self.figure} {self.value:.4g} "
                f"{'within' if self.passed else 'breaks'} threshold {self.threshold:g}")


def calibration_nhwc(images_u8: np.ndarray, image_size: int) -> np.ndarray:
    """Real training images as onnx2tf wants calibration data: float32 N,H,W,C in 0..1 at the model's input size
    (onnx2tf applies (x - mean) / std itself)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float().div_(255)
    identity = Normalization(tuple(0.0 for _ in range(x.shape[1])), tuple(1.0 for _ in range(x.shape[1])))
    return np.ascontiguousarray(normalize(x, identity, image_size).permute(0, 2, 3, 1).numpy(), np.float32)


def _onnx2tf_reason(log: str) -> str:
    """The lines of onnx2tf's own output that say what failed and on which op."""
    clean = re.sub(r"\x1b\[[0-9;]*m", "", log)
    keep = [ln.strip() for ln in clean.splitlines()
            if re.search(r"ERROR|onnx_op_type|onnx_op_name|Error:|not supported", ln)]
    return " | ".join(keep[-4:])[:600] or (clean.strip().splitlines() or ["no output"])[-1][:300]


def run_onnx2tf(onnx_path: Path, workdir: Path, calib: np.ndarray, norm: Normalization, int8: bool) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the real messages
    import onnx2tf

    onnx_path, workdir = Path(onnx_path).resolve(), Path(workdir).resolve()
    model = workdir / "model.onnx"
    shutil.copy(onnx_path, model)  # onnx2tf rewrites its input file
    np.save(workdir / "calib.npy", calib)
    if calib.shape[-1] == 3:  # keeps onnx2tf offline even if it falls back to its sample file
        np.save(workdir / ONNX2TF_SAMPLE, calib[:20])
    channels = calib.shape[-1]
    mean = np.asarray(norm.mean, np.float32).reshape(1, 1, 1, channels)
    std = np.asarray(norm.std, np.float32).reshape(1, 1, 1, channels)
    log = io.StringIO()
    cwd = Path.cwd()
    try:
        os.chdir(workdir)  # onnx2tf looks for its sample calibration file in the working directory
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            onnx2tf.convert(
                input_onnx_file_path=str(model), output_folder_path=str(workdir / "tf"),
                output_integer_quantized_tflite=int8,
                quant_type="per-channel",  # per-channel weight scales: the accuracy-preserving default
                custom_input_op_name_np_data_path=[["input", str(workdir / "calib.npy"), mean, std]] if int8 else None,
                input_quant_dtype="int8", output_quant_dtype="int8",  # int8 in and out: no float at the edges
                non_verbose=False,
            )
    except (SystemExit, Exception) as e:
        saved = workdir.parent / "onnx2tf.log"  # outlives the temporary directory, for the full story
        saved.write_text(log.getvalue() + f"\n{e.__class__.__name__}: {e}\n")
        raise EdgeError(f"{onnx_path}: onnx2tf failed: {_onnx2tf_reason(log.getvalue()) or e} "
                        f"(full log: {saved})") from None
    finally:
        os.chdir(cwd)
    (workdir / "onnx2tf.log").write_text(log.getvalue())
    return workdir / "tf"


def convert_tflite(onnx_path: Path, out_dir: Path, calib_u8: np.ndarray, norm: Normalization, image_size: int,
                   variants: tuple[str, ...] = tuple(VARIANTS), prefix: str = "") -> dict[str, Path]:
    """Write out_dir/<prefix><variant>.tflite for each variant; returns their paths. Gates: gate_tflite."""
    if not Path(onnx_path).is_file():
        raise EdgeError(f"{onnx_path}: ONNX file missing; run `resnet-edge export` first")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise EdgeError(f"unknown TFLite variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".onnx2tf-", dir=out_dir) as tmp:
        tf_dir = run_onnx2tf(Path(onnx_path), Path(tmp), calibration_nhwc(calib_u8, image_size), norm,
                             int8=bool({"int8", "dynamic_range"} & set(variants)))
        paths = {}
        for variant in variants:
            produced = tf_dir / f"model_{VARIANTS[variant]}.tflite"
            if not produced.is_file() or produced.stat().st_size == 0:
                reason = _onnx2tf_reason((Path(tmp) / "onnx2tf.log").read_text())
                raise EdgeError(f"{onnx_path}: onnx2tf produced no {variant} file ({reason})")
            paths[variant] = atomic_write(out_dir / f"{prefix}{variant}.tflite",
                                          lambda t, src=produced: shutil.copyfile(src, t))
    files = ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.2f} MiB)" for p in paths.values())
    print(f"convert ok {time.perf_counter() - start:.1f} s -> {files}", file=sys.stderr)
    return paths


def gate_tflite(results: dict[str, dict], reference: dict, max_int8_drop: float) -> list[Gate]:
    """Gates on evaluate() rows: fp32 logits parity, fp16 agreement, quantized top-1 drop (points) vs fp32."""
    gates = []
    for variant, row in results.items():
        name = Path(row["artifact"]).name
        if variant == "fp32":
            gates.append(Gate(name, "max |dlogit| vs ONNX", row["max_abs_diff"], FP32_PARITY,
                              row["max_abs_diff"] <= FP32_PARITY))
        elif variant == "fp16":
            gates.append(Gate(name, "top-1 agreement with ONNX", row["agreement"], FP16_AGREEMENT,
                              row["agreement"] >= FP16_AGREEMENT))
        else:
            drop = 100 * (reference["top1"] - row["top1"])
            gates.append(Gate(name, "top-1 drop vs fp32 (points)", drop, max_int8_drop, drop <= max_int8_drop))
    return gates


def convert_stage(cfg) -> dict[str, Path]:
    """runs/<name>/onnx/model.onnx -> runs/<name>/tflite/{fp32,fp16,dynamic_range,int8}.tflite, each evaluated on the
    test split against the ONNX model and gated; eval/<variant>.json and tflite/gates.json record the figures."""
    from .checkpoint import atomic_write_json
    from .data import load_data_for, eval_arrays
    from .evaluate import evaluate

    onnx_path = cfg.run_dir / "onnx" / "model.onnx"
    if not onnx_path.is_file():
        raise EdgeError(f"{onnx_path}: no ONNX model; run `resnet-edge export name={cfg.name}` first")
    data = load_data_for(cfg)
    calib = np.asarray(data.calibration.images[: len(data.calibration)])
    paths = convert_tflite(onnx_path, cfg.run_dir / "tflite", calib, data.norm, cfg.image_size)
    x, labels = eval_arrays(data, cfg.image_size, cfg.eval_subset)
    rows = evaluate([onnx_path, *paths.values()], x, labels, cfg.run_dir / "eval", reference=onnx_path,
                    classes=data.classes, threads=cfg.threads or None)
    gates = gate_tflite(dict(zip(paths, rows[1:])), rows[0], cfg.max_int8_drop)
    atomic_write_json(cfg.run_dir / "tflite" / "gates.json", [g.__dict__ for g in gates])
    for g in gates:
        print(f"gate {'pass' if g.passed else 'FAIL'}: {g.text()}", file=sys.stderr)
    failed = [g.text() for g in gates if not g.passed]
    if failed:
        raise EdgeError("convert gate failed: " + "; ".join(failed))
    return paths
