"""An artifact's precision, read from the file (never guessed from its name): the one rule of the project.

TFLite: from the tensors' types (LiteRT's own flatbuffer schema); device_tests/tflite_precision.py is the standalone
copy of the same rule for the device scripts, and tests/test_precision.py feeds both the same files.
ONNX: QuantizeLinear / QLinear* / integer ops mean int8, DynamicQuantizeLinear dynamic-range, float16 weights fp16.
A torch checkpoint is fp32.
"""

from __future__ import annotations

from pathlib import Path

from .errors import EdgeError

PRECISIONS = ("fp32", "fp16", "dynamic_range", "int8", "mixed")
QUANTIZED = ("int8", "dynamic_range", "mixed")  # gated on top-1 drop vs the fp32 model
INT8_PRECISIONS = ("int8", "mixed")  # int8 activations, with or without float fallback layers
FLOAT32, FLOAT16, UINT8, INT8, INT4 = 0, 1, 3, 9, 17  # TFLite TensorType values
INT8_TYPES = {UINT8, INT8, INT4}


def is_int8_tflite(fmt: str | None, precision: str | None) -> bool:
    """What the project ships to a phone: a TFLite file with int8 activations (int8, or mixed: int8 with float
    fallback layers). The one rule behind the size gate, the recommended file, compare's pick and explain's rows."""
    return fmt == "tflite" and precision in INT8_PRECISIONS


def tflite_precision(path: Path) -> str:
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise EdgeError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = schema.Model.GetRootAs(buf, 0)
        graph = model.Subgraphs(0)
        io = set(graph.InputsAsNumpy().tolist()) | set(graph.OutputsAsNumpy().tolist())
        constants, activations = set(), set()
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            b = tensor.Buffer()
            data = model.Buffers(b) if 0 < b < model.BuffersLength() else None
            if data is not None and (data.DataLength() > 0 or data.Size() > 0):
                constants.add(tensor.Type())
            elif i not in io:
                activations.add(tensor.Type())
    except Exception as e:  # noqa: BLE001  struct.error, IndexError...: an offset past the end
        raise EdgeError(f"{path}: truncated or corrupt TFLite file ({len(buf)} bytes)") from e
    if FLOAT16 in constants:
        return "fp16"
    if activations & INT8_TYPES:
        return "mixed" if FLOAT32 in activations else "int8"
    return "dynamic_range" if constants & INT8_TYPES else "fp32"


def tflite_ops(path: Path) -> list[dict]:
    """The main subgraph's operators in graph order: op name, input and output tensor types (constants included)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        ops.append(
            {
                "op": names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"),
                "inputs": [types[graph.Tensors(t).Type()] for t in op.InputsAsNumpy() if t >= 0],
                "outputs": [types[graph.Tensors(t).Type()] for t in op.OutputsAsNumpy()],
            }
        )
    return ops


def onnx_precision(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    if "DynamicQuantizeLinear" in ops:
        return "dynamic_range"
    if "QuantizeLinear" in ops or any(op.startswith("QLinear") or op.endswith("Integer") for op in ops):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def precision_of(path: Path) -> str:
    path = Path(path)
    readers = {".tflite": tflite_precision, ".onnx": onnx_precision}
    if path.suffix in (".pt", ".pth"):
        return "fp32"
    if path.suffix not in readers:
        raise EdgeError(f"{path}: unknown artifact type {path.suffix!r}; expected .pt, .onnx or .tflite")
    return readers[path.suffix](path)


def format_of(path: Path) -> str:
    return {".tflite": "tflite", ".onnx": "onnx", ".pt": "torch", ".pth": "torch"}.get(Path(path).suffix, "?")
