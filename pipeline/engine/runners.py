"""One Runner interface: runner(batch NCHW float32, normalised) -> logits float32. The only code that opens a model
file. evaluate and benchmark both go through it, whatever the format: torch checkpoint, ONNX, TFLite."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from ..core.errors import EdgeError


def same_outputs(open_batched, one_at_a_time, probe: np.ndarray):
    """The rule for evaluating a batch-1 file many images at a time: `open_batched()` -> (handle, run) is kept (the
    handle returned) only if run(probe) is bit for bit what the file gives one image at a time; else False (any
    refusal of the runtime too: a graph with the batch baked into a reshape)."""
    try:
        handle, run = open_batched()
        return handle if np.array_equal(run(probe), one_at_a_time(probe)) else False
    except Exception:  # noqa: BLE001
        return False


class Runner(Protocol):
    path: Path
    format: str  # torch | onnx | tflite
    precision: str  # fp32 | fp16 | dynamic_range | int8 | ...

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRunner:
    """A resnet-edge checkpoint (best.pt / last.pt), rebuilt from the model name and options it carries."""

    format, precision = "torch", "fp32"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import torch

        from .checkpoint import load_checkpoint, model_from_checkpoint

        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path)
        self.model = model_from_checkpoint(load_checkpoint(self.path))

    @classmethod
    def from_model(cls, model) -> TorchRunner:
        runner = cls.__new__(cls)
        runner.model, runner.path = model.eval(), Path("<in memory>")
        return runner

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32))).numpy()


class OnnxRunner:
    """onnxruntime on the CPU; a QDQ (NNCF int8) model runs with int8 kernels."""

    format = "onnx"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: ONNX file not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EdgeError(f"{self.path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from e
        self.input = self.session.get_inputs()[0]
        self.fixed_batch = self.input.shape[0] if isinstance(self.input.shape[0], int) else None
        self._opts, self._batched = opts, None  # None: not tried; False: stays at its fixed batch; else a session

    def _try_batched(self, x: np.ndarray) -> None:
        """Evaluation speed (fp32 ResNet-18 at 32 px: 2.5x): a batch-1 file opened again with a free batch axis, kept
        only if it gives exactly what the file gives one image at a time on these images (a QDQ file's int8 kernels
        round differently by batch, so it stays at batch 1)."""
        import onnx
        import onnxruntime as ort

        def open_batched():
            model = onnx.load(str(self.path))
            for value in [model.graph.input[0], *model.graph.output]:
                value.type.tensor_type.shape.dim[0].dim_param = "batch"
            del model.graph.value_info[:]  # shapes inferred for batch 1
            session = ort.InferenceSession(model.SerializeToString(), self._opts, providers=["CPUExecutionProvider"])
            return session, lambda probe: session.run(None, {self.input.name: probe})[0]

        self._batched = same_outputs(open_batched, self._one_by_one, x[:32])

    def _one_by_one(self, batch: np.ndarray) -> np.ndarray:
        n = self.fixed_batch
        return np.concatenate(
            [self.session.run(None, {self.input.name: batch[i : i + n]})[0] for i in range(0, len(batch), n)]
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        if self.fixed_batch and len(batch) != self.fixed_batch:
            if self.fixed_batch == 1 and self._batched is None:
                self._try_batched(batch)
            if self._batched:
                return self._batched.run(None, {self.input.name: batch})[0]
            return self._one_by_one(batch)
        return self.session.run(None, {self.input.name: batch})[0]

    @functools.cached_property
    def precision(self) -> str:
        """Read on demand: it loads the whole graph again, which the benchmark worker (whose memory is being
        measured) never needs."""
        from ..core.precision import onnx_precision

        return onnx_precision(self.path)


class TFLiteRunner:
    """The LiteRT interpreter (XNNPACK on CPU). Owns NCHW -> NHWC and int8 quantize / dequantize of input and output
    with each tensor's own scale and zero point. Tensors are picked by index: names differ between converters."""

    format = "tflite"

    BATCH = 32  # images per invoke when evaluating many: a batch-1 file resized, if it gives the same outputs

    def __init__(self, path: Path, threads: int | None = None, make_interpreter=None) -> None:
        """make_interpreter(model_path) -> Interpreter: another way to open the file (explain keeps every
        intermediate tensor); by default LiteRT's Interpreter with XNNPACK on `threads` threads."""
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: TFLite file not found")
        self._default = make_interpreter is None
        self._make = make_interpreter or (lambda p: Interpreter(model_path=p, num_threads=threads or os.cpu_count()))
        try:
            self.interpreter = self._make(str(self.path))
            self.interpreter.allocate_tensors()
        except Exception as e:
            raise EdgeError(f"{self.path}: LiteRT cannot load it ({str(e).splitlines()[0][:200]})") from e
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batched = None  # None: not tried yet; False: this file does not batch; else (interpreter, in, out)

    @functools.cached_property
    def precision(self) -> str:
        from ..core.precision import tflite_precision

        return tflite_precision(self.path)

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.output["dtype"] == np.float32:
            return y.astype(np.float32)
        scale, zero = self.output["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def _one_at_a_time(self, x: np.ndarray) -> np.ndarray:
        n = int(self.input["shape"][0]) or 1
        outputs = []
        for i in range(0, len(x), n):  # onnx2tf bakes the batch size into the graph
            self.interpreter.set_tensor(self.input["index"], self._quantize(x[i : i + n]))
            self.interpreter.invoke()
            outputs.append(self._dequantize(self.interpreter.get_tensor(self.output["index"])))
        return np.concatenate(outputs)

    def _invoke_batched(self, x: np.ndarray) -> np.ndarray:
        interpreter, inp, out = self._batched
        outputs = []
        for i in range(0, len(x), self.BATCH):
            chunk = self._quantize(x[i : i + self.BATCH])
            pad = self.BATCH - len(chunk)  # the last chunk padded with zeros; their outputs are dropped
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            interpreter.set_tensor(inp["index"], chunk)
            interpreter.invoke()
            outputs.append(self._dequantize(interpreter.get_tensor(out["index"]))[: self.BATCH - pad])
        return np.concatenate(outputs)

    def _try_batched(self, x: np.ndarray) -> None:
        """Evaluation speed (fp32 ResNet-18 at 32 px: 1.2 against 2.2 ms an image): a second interpreter with the
        input resized to BATCH images, kept only if it gives exactly what the file gives one image at a time on
        these images (a graph with the batch baked into a reshape fails here and stays at batch 1)."""

        def open_batched():
            interpreter = self._make(str(self.path))
            interpreter.resize_tensor_input(self.input["index"], [self.BATCH, *self.input["shape"][1:]])
            interpreter.allocate_tensors()
            self._batched = (interpreter, interpreter.get_input_details()[0], interpreter.get_output_details()[0])
            return self._batched, self._invoke_batched

        self._batched = same_outputs(open_batched, self._one_at_a_time, x[: self.BATCH])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, np.float32)
        if x.ndim == 4 and self.input["shape"][-1] == x.shape[1] and self.input["shape"][1] != x.shape[1]:
            x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC, as onnx2tf lays images out
        if len(x) > 1 and self._default and int(self.input["shape"][0]) == 1:
            if self._batched is None:
                self._try_batched(x)
            if self._batched:
                return self._invoke_batched(x)
        return self._one_at_a_time(x)


def tflite_weight_sparsity(path: Path) -> dict:
    """Share of exact zeros in a TFLite file's int8 weight tensors (told from activations by their per-channel
    scales: onnx2tf quantizes conv and fully-connected weights per channel, activations per tensor)."""
    runner = TFLiteRunner(path, threads=1)
    total = zeros = 0
    for d in runner.interpreter.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) > 1:
            w = runner.interpreter.get_tensor(d["index"])
            total, zeros = total + w.size, zeros + int((w == 0).sum())
    return {"int8_weights": total, "zero_share": zeros / total if total else 0.0}


def open_runner(path: str | Path, threads: int | None = None) -> Runner:
    path = Path(path)
    if not path.exists():
        raise EdgeError(f"{path}: artifact not found")
    kinds = {".pt": TorchRunner, ".pth": TorchRunner, ".onnx": OnnxRunner, ".tflite": TFLiteRunner}
    if path.suffix not in kinds:
        raise EdgeError(f"{path}: unknown artifact type {path.suffix!r}; expected .pt, .onnx or .tflite")
    return kinds[path.suffix](path, threads)


def python_apart(code: str, args: list[str], threads: int, timeout: float | None = None):
    """Run `code` (which prints one line `RESULT <json>`) in a fresh Python process of its own, at `threads` OpenMP
    threads, from the checkout: what it printed after RESULT, decoded. Nothing of the caller's (its memory, torch's or
    TensorFlow's thread pools still spinning after a fine-tune or a conversion) shares the process. EdgeError: the
    last line it wrote to stderr, or the timeout."""
    from ..core.layout import REPO

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
        )
    except subprocess.TimeoutExpired as e:
        raise EdgeError(f"timed out after {timeout} s") from e
    result = next((ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or result is None:
        raise EdgeError((proc.stderr.strip().splitlines() or ["no output"])[-1][:300])
    return json.loads(result)
