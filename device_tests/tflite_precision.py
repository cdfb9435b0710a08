"""The precision of a .tflite file, read from the file itself (its tensors' types), with the standard library only:
the device scripts' copy of the rule in resnet-edge's pipeline/precision.py (a test feeds both the same files).

    fp16           a constant tensor is float16 (weights stored as fp16, dequantized at load)
    int8           int8 activations, no float32 activation between the model's inputs and outputs
    mixed          int8 and float32 activations (int8 with some layers kept in float)
    dynamic_range  int8 weights, float32 activations (weights dequantized on the fly)
    fp32           none of the above

A .tflite file is a FlatBuffer (schema: tensorflow/compiler/mlir/lite/schema/schema.fbs); this reads only
Model.subgraphs[0].tensors/inputs/outputs and Model.buffers.
"""

from __future__ import annotations

import struct

FLOAT32, FLOAT16, UINT8, INT8, INT4 = 0, 1, 3, 9, 17  # TensorType values
INT8_TYPES = {UINT8, INT8, INT4}
# field indices in schema.fbs
MODEL_SUBGRAPHS, MODEL_BUFFERS = 2, 4
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS = 0, 1, 2
TENSOR_TYPE, TENSOR_BUFFER = 1, 2
BUFFER_DATA, BUFFER_SIZE = 0, 2


class _Table:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vsize = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0] if slot < self.vsize else 0

    def scalar(self, index: int, fmt: str, default=0):
        off = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _vector(self, index: int) -> tuple[int, int]:
        off = self._field(index)
        if not off:
            return 0, 0
        start = self.pos + off + struct.unpack_from("<I", self.buf, self.pos + off)[0]
        return start + 4, struct.unpack_from("<I", self.buf, start)[0]

    def tables(self, index: int) -> list[_Table]:
        start, n = self._vector(index)
        return [_Table(self.buf, p + struct.unpack_from("<I", self.buf, p)[0]) for p in range(start, start + 4 * n, 4)]

    def ints(self, index: int) -> list[int]:
        start, n = self._vector(index)
        return list(struct.unpack_from(f"<{n}i", self.buf, start)) if n else []

    def length(self, index: int) -> int:
        return self._vector(index)[1]


def tensor_types(path: str) -> list[tuple[int, bool, bool]]:
    """(TensorType, is constant, is a model input or output) for every tensor of the main subgraph."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        graph = model.tables(MODEL_SUBGRAPHS)[0]
        buffers = model.tables(MODEL_BUFFERS)
        io = set(graph.ints(SUBGRAPH_INPUTS)) | set(graph.ints(SUBGRAPH_OUTPUTS))
        out = []
        for i, tensor in enumerate(graph.tables(SUBGRAPH_TENSORS)):
            b = tensor.scalar(TENSOR_BUFFER, "I")
            constant = 0 < b < len(buffers) and (
                buffers[b].length(BUFFER_DATA) > 0 or buffers[b].scalar(BUFFER_SIZE, "Q") > 0
            )
            out.append((tensor.scalar(TENSOR_TYPE, "b"), constant, i in io))
    except (struct.error, IndexError) as e:  # an offset past the end: a cut-off copy
        raise ValueError(f"{path}: truncated or corrupt TFLite file ({len(buf)} bytes; {e})") from e
    return out


def precision_of_types(types: list[tuple[int, bool, bool]]) -> str:
    """The rule, on (TensorType, is constant, is model input/output) triples."""
    constants = {t for t, const, _ in types if const}
    activations = {t for t, const, io in types if not const and not io}
    if FLOAT16 in constants:
        return "fp16"
    if activations & INT8_TYPES:
        return "mixed" if FLOAT32 in activations else "int8"
    if constants & INT8_TYPES:
        return "dynamic_range"
    return "fp32"


def tflite_precision(path: str) -> str:
    return precision_of_types(tensor_types(path))
