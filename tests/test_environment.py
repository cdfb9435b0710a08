"""The locked set works as one environment: every tool imports, NNCF quantizes an ONNX model and onnx2tf converts
one, side by side (nncf 3.4's ONNX backend breaks under onnx2tf 1.29's protobuf pins; this guards that)."""

import importlib
import shutil

import numpy as np
import torch
from conftest import locked

TOOLS = [
    "torch",
    "tensorflow",
    "onnx",
    "onnxruntime",
    "onnx2tf",
    "nncf",
    "ai_edge_litert",
    "tf_keras",
    "onnx_graphsurgeon",
    "onnxsim",
    "sng4onnx",
    "torch_pruning",
    "litert_torch",
]


def _tiny_onnx(path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 4),
    ).eval()
    x = torch.randn(16, 1, 12, 12)
    torch.onnx.export(
        model,
        x[:1],
        path,
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    with torch.no_grad():
        return x.numpy(), model(x).numpy()


def test_every_tool_imports():
    versions = {name: getattr(importlib.import_module(name), "__version__", "?") for name in TOOLS}
    assert versions["onnx2tf"] == locked("onnx2tf") and versions["nncf"] == locked("nncf")
    assert versions["torch"].split("+")[0] == locked("torch") and versions["onnx"] == locked("onnx")
    import nncf.onnx.quantization.quantizer_parameters  # noqa: F401  (the import that 1.29's pins break)

    assert shutil.which("onnxsim"), "onnx2tf calls the onnxsim program: the venv's bin must be on PATH"


def test_nncf_onnx_ptq_and_onnx2tf_convert_in_one_process(tmp_path, monkeypatch):
    import nncf
    import onnx
    import onnx2tf
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.chdir(tmp_path)
    x, reference = _tiny_onnx(tmp_path / "tiny.onnx")

    # NNCF post-training quantization of the ONNX graph -> QDQ ONNX that onnxruntime runs
    calibration = nncf.Dataset([x[i : i + 1] for i in range(len(x))], lambda a: {"input": a})
    quantized = nncf.quantize(onnx.load(tmp_path / "tiny.onnx"), calibration, subset_size=len(x))
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    onnx.save(quantized, tmp_path / "tiny_int8.onnx")
    int8 = ort.InferenceSession(str(tmp_path / "tiny_int8.onnx")).run(None, {"input": x})[0]
    assert np.abs(int8 - reference).max() < 0.05 * np.abs(reference).max()

    # onnx2tf float32 conversion (it rewrites its input file, so it gets a copy), run by the LiteRT interpreter
    shutil.copy(tmp_path / "tiny.onnx", tmp_path / "copy.onnx")
    onnx2tf.convert(
        input_onnx_file_path=str(tmp_path / "copy.onnx"), output_folder_path=str(tmp_path / "tf"), non_verbose=True
    )
    interpreter = Interpreter(model_path=str(tmp_path / "tf" / "copy_float32.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert tuple(inp["shape"]) == (1, 12, 12, 1)  # onnx2tf turns NCHW into NHWC
    worst = 0.0
    for i in range(4):
        interpreter.set_tensor(inp["index"], x[i : i + 1].transpose(0, 2, 3, 1))
        interpreter.invoke()
        worst = max(worst, float(np.abs(interpreter.get_tensor(out["index"]) - reference[i : i + 1]).max()))
    assert worst < 1e-4


def test_setup_built_nncfs_extension_into_the_venv():
    """`make setup` compiles NNCF's torch CPU extension into this venv (quantization/__init__.py names the folder):
    the suite and the demo only load it. Its setup step used to build nothing (NNCF's own force_build sees the
    extension only once its module is imported), and the per-user folder it used was rebuilt by every other
    checkout's venv (19 s to a minute, inside whichever test loaded it next)."""
    import os
    import sys
    from pathlib import Path

    from conftest import SESSION_START

    from quantization.nncf_ops import build_extension

    assert sys.prefix != sys.base_prefix  # the suite runs in `make setup`'s venv
    folder = Path(sys.prefix) / "torch_extensions"
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(folder)
    library = build_extension()
    assert library.is_relative_to(folder) and library.name == "quantized_functions_cpu.so"
    assert library.stat().st_mtime < SESSION_START  # built before the tests started, not by one of them


def test_the_extension_is_not_rebuilt_by_a_process_with_another_ninja_first_on_path(tmp_path):
    """A process started from a shell whose PATH has /usr/bin before the venv (Debian's ninja-build 1.11 there, the
    locked ninja 1.13 in the venv) loads the extension as built: the two ninjas do not read each other's build log, and
    the one it found first used to compile it again (40 s), then the next process of the suite compiled it once more.
    On a copy of the venv's extension folder, so the venv's own stays as `make setup` made it."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    folder = Path(sys.prefix) / "torch_extensions"
    copy = Path(shutil.copytree(folder, tmp_path / "torch_extensions", symlinks=True))
    built = sorted(copy.rglob("quantized_functions_cpu.so"))
    assert built, "make setup builds the extension"
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(copy), "PATH": "/usr/bin:/bin"}
    code = "from quantization.nncf_ops import build_extension; print(build_extension())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()) == built[0]
    changed = [p.name for p, t in before.items() if p.stat().st_mtime_ns != t]
    assert changed == [], f"rebuilt with PATH=/usr/bin:/bin ({shutil.which('ninja', path='/usr/bin:/bin')}): {changed}"
