"""Latency measured, not modelled: a table of int8 op latencies timed with the runtime a phone file runs on (LiteRT,
XNNPACK, int8, batch 1, one size and thread count), from which a channel plan's latency is predicted.

Each entry is one op as onnx2tf writes it into an int8 file (a conv with per-channel int8 weights and a fused ReLU, a
residual add, a max-pool; a PAD op before a strided conv or pool with padding, SAME padding for a stride-1 conv),
built here as a one-op .tflite with the TFLite schema (no converter: 30 ms an entry) and timed alone, in a fresh
process. A model's whole files relate to the sum of their entries by a line, `scale * sum + offset`, through two
whole files timed together: the dense model and the search's fastest plan (`calibrate`). A plan's prediction is that
line at its entries' sum.

The table is plain JSON that a standalone script can write (issue: the same table measured on the device):

    {"format": "resnet-edge latency table 1",
     "identity": {"device": ..., "isa": [...], "runtime": "ai-edge-litert 2.3.0", "mode": "interpreter",
                  "size": 224, "threads": 1},
     "entries": {"conv 3x3/1 p1 56px 64>64": 0.162, "add 56px 64>64": 0.057, ...},
     "rest": {"<model key>": {"points": [{"file", "whole_ms", "ops_ms"}, ...], "scale", "offset_ms", "whole_ms"}},
     "timing": {"ruler", "ruler_ms", "warmup", "runs", "rounds", "span_s", "statistic"}}
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
import types
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ..core.artifacts import atomic_write_json
from ..core.errors import EdgeError
from ..core.host import host
from ..core.layout import tflite_memory

FORMAT = "resnet-edge latency table 1"
MODE = "interpreter"  # the benchmark stage's `ms @1 thread` mode: LiteRT's Interpreter with XNNPACK
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "asimddp", "i8mm", "sve")
WARMUP, RUNS, ROUNDS, SPAN_S = 2, 5, 3, 10.0


def runtime() -> str:
    try:
        return f"ai-edge-litert {version('ai-edge-litert')}"
    except PackageNotFoundError:
        return f"tflite-runtime {version('tflite-runtime')}"


def isa() -> list[str]:
    """The CPU features XNNPACK picks its int8 kernels by (x86: AVX2 .. AMX; arm64: dot product, i8mm)."""
    try:
        flags = {w for ln in Path("/proc/cpuinfo").read_text().splitlines() if ":" in ln for w in ln.split()}
    except OSError:
        return []
    return [f for f in ISA_FLAGS if f in flags]


def identity(size: int, threads: int) -> dict:
    """What a table's figures hold for: this host's CPU and ISA, the runtime and its version, mode, size, threads."""
    return {
        "device": f"{host()['cpu']} ({platform.machine()})",
        "isa": isa(),
        "runtime": runtime(),
        "mode": MODE,
        "size": size,
        "threads": threads,
    }


def entry_key(shape) -> str:
    """An op's table key: the op, kernel / stride, padding, input size, channels in > out."""
    k = f"{shape.kernel}x{shape.kernel}/{shape.stride} p{shape.padding} " if shape.op != "add" else ""
    return f"{shape.op} {k}{shape.hw}px {shape.cin}>{shape.cout}"


def op_tflite(*shapes, seed: int = 0, pattern: bool = False) -> bytes:
    """A .tflite holding int8 ops in a chain (each reads the one before), each as onnx2tf writes it (a PAD op before
    a strided conv or pool with padding):
    a conv with random per-channel weights (XNNPACK's int8 kernels do the same work for any values; `pattern`: one
    random 4093-byte block repeated, which a zip deflates, for the device pack) and a fused ReLU,
    a residual add of two differently scaled inputs with its ReLU, or a max-pool."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as S  # noqa: N812 (the schema's own name)

    rng = np.random.default_rng(seed)
    tensors, buffers, operators, codes = [], [S.BufferT()], [], []  # buffer 0: the schema's empty sentinel

    def tensor(dims, kind=S.TensorType.INT8, data=None, scale=0.02, zero_point=-128, axis=0) -> int:
        buffer = S.BufferT()
        if data is not None:
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        buffers.append(buffer)
        t = S.TensorT()
        t.shape, t.type, t.buffer, t.name = list(dims), kind, len(buffers) - 1, f"t{len(tensors)}".encode()
        if kind == S.TensorType.INT8 or scale is not None and kind == S.TensorType.INT32:
            q = S.QuantizationParametersT()
            q.scale = [float(v) for v in np.atleast_1d(scale)]
            q.zeroPoint = [int(v) for v in np.broadcast_to(zero_point, len(q.scale))]
            q.quantizedDimension = axis
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def operator(op, version, inputs, outputs, options_type, options) -> None:
        if op not in codes:
            codes.append(op)
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes.index(op), inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        operators.append((o, version))

    relu = S.ActivationFunctionType.RELU
    x, q = tensor([1, shapes[0].hw, shapes[0].hw, shapes[0].cin]), 0.02  # q: the scale of x (zero point -128)
    inputs = [x]
    for shape in shapes:
        k, st, p, hw, cin, cout = shape.kernel, shape.stride, shape.padding, shape.hw, shape.cin, shape.cout
        explicit = shape.op != "add" and st > 1 and p > 0
        size = hw + 2 * p if explicit else hw
        if explicit:
            paddings = tensor([4, 2], S.TensorType.INT32, np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32), None)
            padded = tensor([1, size, size, cin], scale=q)  # PAD and MAX_POOL keep their input's quantization
            operator(S.BuiltinOperator.PAD, 2, [x, paddings], [padded], S.BuiltinOptions.PadOptions, S.PadOptionsT())
            x = padded
        same = p > 0 and not explicit
        out_hw = -(-size // st) if same else (size - k) // st + 1
        if shape.op == "conv":
            scales = rng.uniform(0.001, 0.01, cout)
            weights = (
                np.resize(rng.integers(-127, 128, 4093, dtype=np.int8), (cout, k, k, cin))  # zips 100x smaller
                if pattern
                else rng.integers(-127, 128, (cout, k, k, cin), dtype=np.int8)
            )
            w = tensor([cout, k, k, cin], data=weights, scale=scales, zero_point=0)
            b = tensor([cout], S.TensorType.INT32, rng.integers(-1000, 1000, cout, dtype=np.int32), q * scales, 0)
            y, q = tensor([1, out_hw, out_hw, cout], scale=0.05), 0.05
            options = S.Conv2DOptionsT()
            options.padding = S.Padding.SAME if same else S.Padding.VALID
            options.strideW = options.strideH = st
            options.dilationWFactor = options.dilationHFactor = 1
            options.fusedActivationFunction = relu
            operator(S.BuiltinOperator.CONV_2D, 3, [x, w, b], [y], S.BuiltinOptions.Conv2DOptions, options)
        elif shape.op == "add":  # the other summand (the block's shortcut) comes from outside
            x2 = tensor([1, hw, hw, cin], scale=0.03, zero_point=-5)
            inputs.append(x2)
            y, q = tensor([1, hw, hw, cout], scale=0.05), 0.05
            options = S.AddOptionsT()
            options.fusedActivationFunction = relu
            operator(S.BuiltinOperator.ADD, 2, [x, x2], [y], S.BuiltinOptions.AddOptions, options)
        elif shape.op == "maxpool":
            y = tensor([1, out_hw, out_hw, cout], scale=q)
            options = S.Pool2DOptionsT()
            options.padding = S.Padding.SAME if same else S.Padding.VALID
            options.strideW = options.strideH = st
            options.filterWidth = options.filterHeight = k
            operator(S.BuiltinOperator.MAX_POOL_2D, 2, [x], [y], S.BuiltinOptions.Pool2DOptions, options)
        else:
            raise EdgeError(f"latency table: no entry kind for op {shape.op!r} (conv, add, maxpool)")
        x = y
    op_codes = []
    for op in codes:
        c = S.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = op
        c.version = max(v for o, v in operators if codes[o.opcodeIndex] == op)
        op_codes.append(c)
    graph = S.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs = tensors, inputs, [x]
    graph.operators, graph.name = [o for o, _ in operators], b"main"
    model = S.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, op_codes, [graph], buffers
    model.description = b"resnet-edge latency table entry"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def time_file(path: Path, threads: int, warmup: int = WARMUP, runs: int = RUNS) -> float:
    """The fastest ms of one inference of a .tflite file, run as the benchmark stage runs it
    (device_tests/tflite_memory.py's Runner and timing loop)."""
    from ai_edge_litert.interpreter import Interpreter

    tm = tflite_memory()
    runner = tm.Runner(str(path), MODE, threads, Interpreter)
    detail = runner.input
    x = np.zeros(detail["shape"], detail["dtype"])
    return float(np.min(tm.timed(runner, x, warmup, runs)))


def spread(timer, keys: list, ruler) -> tuple[dict, float]:
    """{key: fastest of timer(key)} over rounds through every key: at least ROUNDS of them and SPAN_S seconds, then
    on until no key's fastest has improved by more than 1% for STABLE rounds (at most MAX_SPAN_S). A shared 2-core VM
    runs memory-heavy work at half speed or worse for minutes at a time (a neighbour on the shared cache and memory:
    the dense ResNet-18 int8 file over 1.3x its fastest in 223 of 275 bursts through 40 s, its fastest 5.02 ms all
    the same); the fastest of enough short bursts is still the file's own cost, and stops moving once found.

    `ruler` (a timer of one small fixed op) runs before each burst: only bursts taken while it ran within CALM of its
    fastest count, where a key has one. Returns the figures and the ruler's fastest ms."""
    best = dict.fromkeys(keys, float("inf"))
    calm = dict.fromkeys(keys, False)
    still = dict.fromkeys(keys, 0)  # rounds since the key's fastest last improved by more than 1%
    ruler_best = float("inf")
    start, rounds = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        settled = rounds >= ROUNDS and elapsed >= SPAN_S and min(still.values()) >= STABLE
        if settled or (rounds >= ROUNDS and elapsed >= MAX_SPAN_S):
            break
        for key in keys:
            r, v, before = ruler(), timer(key), best[key]
            ruler_best = min(ruler_best, r)
            if r <= CALM * ruler_best:  # a burst taken while the host ran at its usual speed
                best[key] = min(best[key], v) if calm[key] else v
                calm[key] = True
            elif not calm[key]:
                best[key] = min(best[key], v)
            still[key] = still[key] + 1 if best[key] > 0.99 * before else 0
        rounds += 1
    return best, ruler_best


RULER = types.SimpleNamespace(op="conv", kernel=3, stride=1, padding=1, hw=56, cin=32, cout=32)  # ~0.15 ms here
CALM, STABLE, MAX_SPAN_S = 1.1, 4, 90.0
CALIBRATION_TRIES = 3


def time_apart(paths: list[Path], threads: int, runs: int = RUNS) -> tuple[dict[Path, float], float]:
    """spread() over .tflite files in a fresh process (runners.python_apart), each burst paired with the ruler's:
    ({file: ms}, this session's fastest ruler ms). The same file gave 3.1 to 5.3 ms in the process that had just
    fine-tuned a model. A slow spell that outlasts a whole session (0.47 instead of 0.27 ms for one file through
    10 s) is not caught by the ruler, whose small op it barely slows; the rounds until stable are what outlast it."""
    from .runners import python_apart

    code = (
        "import json, sys; from pathlib import Path; from pipeline.engine import latency_table as lt; "
        "lt.ROUNDS, lt.SPAN_S, lt.MAX_SPAN_S = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[6]); "
        "n, runs, ruler = int(sys.argv[2]), int(sys.argv[5]), Path(sys.argv[7]); "
        "best, r = lt.spread(lambda p: lt.time_file(Path(p), n, runs=runs), json.loads(sys.argv[1]), "
        "lambda: lt.time_file(ruler, n)); print('RESULT ' + json.dumps([best, r]))"
    )
    with tempfile.TemporaryDirectory(prefix="ruler-") as tmp:
        ruler = Path(tmp) / "ruler.tflite"
        ruler.write_bytes(op_tflite(RULER))
        args = [json.dumps([str(p) for p in paths]), str(threads), str(ROUNDS), str(SPAN_S), str(runs)]
        try:
            best, ruler_ms = python_apart(code, [*args, str(MAX_SPAN_S), str(ruler)], threads)
        except EdgeError as e:
            raise EdgeError(f"timing {len(paths)} file(s) with LiteRT failed: {e}") from e
    return {Path(p): ms for p, ms in best.items()}, ruler_ms


def wholes(paths: list[Path], threads: int) -> dict[Path, float]:
    """Several whole files timed in the same rounds (time_apart): they share the host's state."""
    return time_apart(list(paths), threads, runs=2 * RUNS)[0]


def line(points: list[dict]) -> dict:
    """A model's calibration from its whole files' points ({file, whole_ms, ops_ms}, the dense file first): the line
    `whole = scale * ops + offset` through the first and last (offset only for one point, or when they contradict
    the entries' order: the entries' sum shifted to the first file). The host's table and a device's use it alike."""
    scale = 1.0
    if len(points) > 1 and abs(points[0]["ops_ms"] - points[-1]["ops_ms"]) > 1e-9:
        (w0, s0), (w1, s1) = [(p["whole_ms"], p["ops_ms"]) for p in (points[0], points[-1])]
        scale = (w0 - w1) / (s0 - s1)
    if scale <= 0:
        scale = 1.0
    offset = points[0]["whole_ms"] - scale * points[0]["ops_ms"]
    return {"points": points, "scale": scale, "offset_ms": offset, "whole_ms": points[0]["whole_ms"]}


class LatencyTable:
    """A table on disk: load it if its identity matches, measure what is missing, predict a plan's ms."""

    def __init__(self, path: Path, size: int, threads: int) -> None:
        self.path, self.threads = Path(path), threads
        self.identity = identity(size, threads)
        self.entries: dict[str, float] = {}
        self.rest: dict[str, dict] = {}
        self.measured = 0  # entries timed by this object (0: every lookup came from the file)
        self.reused = False
        self.ruler_ms: float | None = None  # the ruler op's ms when the table was first timed (the host's state)
        self.source = "host"  # "device": measured there (device_table.load), never timed again here
        if self.path.is_file():
            data = json.loads(self.path.read_text())
            if data.get("format") == FORMAT and data.get("identity") == self.identity:
                self.entries, self.rest, self.reused = data["entries"], data.get("rest", {}), True
                self.ruler_ms = data.get("timing", {}).get("ruler_ms")

    def save(self) -> Path:
        data = {
            "format": FORMAT,
            "identity": self.identity,
            "entries": dict(sorted(self.entries.items())),
            "rest": self.rest,
            "timing": {
                "ruler": entry_key(RULER),
                "ruler_ms": self.ruler_ms,
                "warmup": WARMUP,
                "runs": RUNS,
                "rounds": ROUNDS,
                "span_s": SPAN_S,
                "statistic": "fastest burst, rounds until stable, ruler-calm bursts first",
            },
        }
        return atomic_write_json(self.path, data)

    def measure(self, shapes) -> None:
        """Time every shape not yet in the table (deduplicated by key), all in one time_apart session."""
        by_key = {entry_key(s): s for s in shapes}
        missing = [key for key in by_key if key not in self.entries]
        if not missing:
            return
        if self.source != "host":
            raise EdgeError(
                f"latency_table={self.path}: no entry for {missing[0]} ({len(missing)} missing): the table was timed "
                "for another model or fit_levels; make this run's bundle and time its latency pack on the device again"
            )
        with tempfile.TemporaryDirectory(prefix="latency-table-") as tmp:
            files = {key: Path(tmp) / f"{i}.tflite" for i, key in enumerate(missing)}
            for key, path in files.items():
                path.write_bytes(op_tflite(by_key[key]))
            timed, ruler_ms = time_apart(list(files.values()), self.threads)
        self.ruler_ms = self.ruler_ms or ruler_ms
        self.entries.update({key: timed[path] for key, path in files.items()})
        self.measured += len(missing)

    def ops_ms(self, shapes) -> float:
        """The sum of the shapes' entries (all of them must be in the table)."""
        missing = [entry_key(s) for s in shapes if entry_key(s) not in self.entries]
        if missing:
            raise EdgeError(f"{self.path}: no entry for {missing[0]} ({len(missing)} missing); measure them first")
        return sum(self.entries[entry_key(s)] for s in shapes)

    def calibrate(self, model_key: str, files: dict[Path, list]) -> dict:
        """How a model's whole files relate to the sum of their ops' entries: {file: its op shapes}, timed together
        (one span, so they share the host's state), then `whole = scale * sum + offset` through them (two files:
        the dense model and the search's fastest plan, the two ends of what it predicts). Alone an op pays what the
        whole graph pays once (an invoke, its own input), and keeps its weights in the cache; in the graph, large
        weights are read again each inference (ResNet-18: 10.7 MiB) and small ops cost less than alone: the line
        through both ends holds both effects. One file: offset only."""
        for shapes in files.values():
            self.measure(shapes)
        ops = [self.ops_ms(s) for s in files.values()]
        for _ in range(CALIBRATION_TRIES):  # timed again while the wholes contradict the entries' order (a busy spell)
            timed = wholes(list(files), self.threads)
            whole = [timed[p] for p in files]
            if all((w0 - w1) * (s0 - s1) > 0 for w0, w1, s0, s1 in zip(whole, whole[1:], ops, ops[1:], strict=False)):
                break
        points = [{"file": Path(p).name, "whole_ms": w, "ops_ms": o} for p, w, o in zip(files, whole, ops, strict=True)]
        self.rest[model_key] = line(points)
        return self.rest[model_key]

    def predict(self, model_key: str, shapes) -> float:
        """Predicted ms of a file with these ops: the model's line through its calibration files, at their entries."""
        if model_key not in self.rest:
            raise EdgeError(f"{self.path}: not calibrated for {model_key} (no whole-file measurement)")
        rest = self.rest[model_key]
        return rest["scale"] * self.ops_ms(shapes) + rest["offset_ms"]


def weight_mib(shapes) -> float:
    """int8 weights of the convs, MiB."""
    return sum(s.cin * s.cout * s.kernel**2 for s in shapes if s.op == "conv") / 2**20
