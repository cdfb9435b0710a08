"""ONNX -> TFLite with onnx2tf: float32, float16, dynamic-range and full-integer int8 (int8 input and output),
calibrated on real training images; and the int8 file made again with some ops in float (TFLite's
QuantizationDebugger deny list). Converters only: the convert stage (pipeline.stages.convert) gates what they make."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..core.artifacts import atomic_write
from ..core.errors import EdgeError
from ..core.names import VARIANTS
from ..data import Normalization, nhwc_constants, normalize
from .torch_to_onnx import export_onnx

CALIBRATED = ("dynamic_range", "int8")  # the variants onnx2tf makes in its calibrated (integer) pass
# onnx2tf reads this file from its working directory for its check of static-batch RGB inputs, downloading it when
# absent (no network here): real calibration images stand in for it.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


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
    keep = [
        ln.strip()
        for ln in clean.splitlines()
        if re.search(r"ERROR|onnx_op_type|onnx_op_name|Error:|not supported", ln)
    ]
    return " | ".join(keep[-4:])[:600] or (clean.strip().splitlines() or ["no output"])[-1][:300]


def run_onnx2tf(
    onnx_path: Path,
    workdir: Path,
    calib: np.ndarray,
    norm: Normalization,
    int8: bool,
    dynamic_range: bool = True,
    saved_model: bool = False,
) -> Path:
    """onnx2tf's fp32 and fp16 files (and dynamic_range), and with `int8` its SavedModel and our full-integer file
    from it (full_integer_int8: onnx2tf's own recipe, without the three calibrated variants we never ship)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the real messages
    import onnx2tf
    import tf_keras

    tf_keras.backend.clear_session()  # layer names restart at 0: the same ONNX gives the same bytes in any process
    onnx_path, workdir = Path(onnx_path).resolve(), Path(workdir).resolve()
    model = workdir / "model.onnx"
    shutil.copy(onnx_path, model)  # onnx2tf rewrites its input file
    if calib.shape[-1] == 3:  # keeps onnx2tf offline
        np.save(workdir / ONNX2TF_SAMPLE, calib[:20])
    mean, std = nhwc_constants(norm, calib.shape[-1])
    log = io.StringIO()
    cwd = Path.cwd()
    try:
        os.chdir(workdir)  # whatever onnx2tf writes beside itself stays in the temporary directory
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), _int8_graph(), _onnxsim_in_process():
            onnx2tf.convert(
                input_onnx_file_path=str(model),
                output_folder_path=str(workdir / "tf"),
                output_signaturedefs=int8 or saved_model,  # the SavedModel the int8 file is calibrated from
                output_dynamic_range_quantized_tflite=dynamic_range,
                non_verbose=False,
            )
            if int8:
                full_integer_int8(workdir / "tf", calib, mean, std)
    except (SystemExit, Exception) as e:
        saved = workdir.parent / "onnx2tf.log"  # outlives the temporary directory, for the full story
        saved.write_text(log.getvalue() + f"\n{e.__class__.__name__}: {e}\n")
        raise EdgeError(
            f"{onnx_path}: onnx2tf failed: {_onnx2tf_reason(log.getvalue()) or e} (full log: {saved})"
        ) from e
    finally:
        os.chdir(cwd)
        print(log.getvalue())  # into the stage's log (pipeline.core.console), or the console with --verbose
    (workdir / "onnx2tf.log").write_text(log.getvalue())
    return workdir / "tf"


class _InProcessOnnxsim:
    """What onnx2tf sees as its `subprocess` module: its `onnxsim` command lines (three per conversion, with the same
    arguments) run by onnxsim's own command-line entry point in this process; anything else goes to subprocess. Each
    `onnxsim` process spent about 2 s of its 2.1 s importing onnxsim (which imports torch): 6 s per conversion."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def check_output(cmd, **kwargs):
        if not cmd or cmd[0] != "onnxsim":
            return subprocess.check_output(cmd, **kwargs)
        import onnxsim

        out, argv = io.StringIO(), sys.argv
        try:
            sys.argv = list(cmd)
            with contextlib.redirect_stdout(out):
                code = onnxsim.main()
        except SystemExit as e:
            code = e.code
        finally:
            sys.argv = argv
        if code not in (None, 0):
            raise subprocess.CalledProcessError(code, cmd, out.getvalue().encode())
        return out.getvalue().encode()


@contextlib.contextmanager
def _onnxsim_in_process():
    import onnx2tf.onnx2tf as converter

    real = converter.subprocess
    converter.subprocess = _InProcessOnnxsim()
    try:
        yield
    finally:
        converter.subprocess = real


@contextlib.contextmanager
def _int8_graph():
    """onnx2tf builds one op differently when asked for int8 files: MaxPool pads with 0 instead of the dtype's minimum
    (which wrecks an int8 scale; exact after a ReLU, and the fp32 parity gate checks it). Every file here is made from
    that graph, as when onnx2tf made the int8 files itself, without its three extra calibrated variants."""
    import onnx2tf.ops.MaxPool as maxpool

    make_node = maxpool.make_node

    def int8_make_node(*args, **kwargs):
        return make_node(*args, **{**kwargs, "output_integer_quantized_tflite": True})

    maxpool.make_node = int8_make_node
    try:
        yield
    finally:
        maxpool.make_node = make_node


def full_integer_int8(tf_dir: Path, calib: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Path:
    """tf_dir/model_full_integer_quant.tflite from onnx2tf's SavedModel in tf_dir, as onnx2tf 1.28 makes it with
    output_integer_quantized_tflite (the same converter settings and calibration feed: int8 kernels, per-channel
    weights, int8 input and output, (x - mean) / std one image at a time), but alone: onnx2tf would also calibrate
    three variants never shipped (float-I/O int8 and two int16-activation files), 3/5 of its int8 time."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(tf_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.SELECT_TF_OPS]
    converter._experimental_disable_per_channel = False
    converter.unfold_batchmatmul = False

    def images():
        for i in range(len(calib)):
            yield [tf.cast(tf.convert_to_tensor((calib[i : i + 1] - mean) / std), tf.float32)]

    converter.representative_dataset = images
    converter.inference_input_type = converter.inference_output_type = tf.int8
    out = tf_dir / f"model_{VARIANTS['int8']}.tflite"
    out.write_bytes(converter.convert())
    return out


def clear_dead_work(out_dir: Path, prefix: str) -> list[str]:
    """Remove the work folders a killed conversion left (.onnx2tf-<prefix><pid>-*, its pid no longer running); the
    folders of a conversion still running, in another process, stay. Returns what it removed."""
    removed = []
    for stale in Path(out_dir).glob(f".onnx2tf-{prefix}*"):
        if not _alive(stale.name.removeprefix(f".onnx2tf-{prefix}").split("-")[0]):
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale.name)
    return removed


def _alive(pid: str) -> bool:
    """The process that owns a work folder (named .onnx2tf-<prefix><pid>-...) still runs: its folder is not ours to
    delete. Anything else (another prefix's folder, no pid) is left alone too; only a dead owner's folder goes."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def convert_tflite(
    onnx_path: Path,
    out_dir: Path,
    calib_u8: np.ndarray,
    norm: Normalization,
    image_size: int,
    variants: tuple[str, ...] = tuple(VARIANTS),
    prefix: str = "",
    keep_saved_model: Path | None = None,
) -> dict[str, Path]:
    """Write out_dir/<prefix><variant>.tflite for each variant; returns their paths (gated by the caller).
    keep_saved_model: a folder to copy onnx2tf's SavedModel into (the int8 fallback quantizes it again)."""
    if not Path(onnx_path).is_file():
        raise EdgeError(f"{onnx_path}: ONNX file missing; run `resnet-edge export` first")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise EdgeError(f"unknown TFLite variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_dead_work(out_dir, prefix)
    with tempfile.TemporaryDirectory(prefix=f".onnx2tf-{prefix}{os.getpid()}-", dir=out_dir) as tmp:
        tf_dir = run_onnx2tf(
            Path(onnx_path),
            Path(tmp),
            calibration_nhwc(calib_u8, image_size),
            norm,
            int8="int8" in variants,
            dynamic_range="dynamic_range" in variants,
            saved_model=keep_saved_model is not None,
        )
        paths = {}
        for variant in variants:
            produced = tf_dir / f"model_{VARIANTS[variant]}.tflite"
            if not produced.is_file() or produced.stat().st_size == 0:
                reason = _onnx2tf_reason((Path(tmp) / "onnx2tf.log").read_text())
                raise EdgeError(f"{onnx_path}: onnx2tf produced no {variant} file ({reason})")
            paths[variant] = atomic_write(
                out_dir / f"{prefix}{variant}.tflite", lambda t, src=produced: shutil.copyfile(src, t)
            )
        if keep_saved_model is not None:
            shutil.copytree(tf_dir, keep_saved_model, ignore=shutil.ignore_patterns("*.tflite"))
    return paths


def requantize(
    saved_model: Path, out: Path, calib_u8: np.ndarray, norm: Normalization, image_size: int, float_tensors: list[str]
) -> Path:
    """onnx2tf's SavedModel quantized again by TFLite's converter, the ops whose output tensors are named in
    `float_tensors` (names in the int8 file onnx2tf made from that SavedModel) kept in float: the deny list of
    TFLite's QuantizationDebugger, the documented way. Calibrated on the same images; float input and output."""
    import tensorflow as tf

    calib = calibration_nhwc(calib_u8, image_size)
    mean, std = nhwc_constants(norm, calib.shape[-1])
    calib = (calib - mean) / std

    def images():
        for i in range(len(calib)):
            yield [calib[i : i + 1]]

    with contextlib.redirect_stdout(io.StringIO()):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = images
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=images,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_tensors)),
        )
        model = debugger.get_nondebug_quantized_model()
    return atomic_write(out, lambda tmp: Path(tmp).write_bytes(model))


def tflite_at_size(
    checkpoint: Path, onnx: Path, variants: tuple[str, ...], calib_u8: np.ndarray, norm, size: int, x: np.ndarray
) -> dict[str, Path]:
    """A checkpoint exported at `size` (parity-gated on `x`, preprocessed images of that size) and converted: ResNet
    is fully convolutional, so the same weights run at any size. -> {variant: <onnx stem>_<variant>.tflite beside
    the ONNX file}. bench/latency.py's and bench/compression.py's files at phone resolution."""
    export_onnx(checkpoint, onnx, x)
    return convert_tflite(onnx, onnx.parent, calib_u8, norm, size, variants, prefix=f"{onnx.stem}_")
