"""Per-layer int8 error (the explain stage, the float fallback's ranking and `resnet-edge explain FILE`): an int8 TFLite
file and its float reference from the same converter run on the same real images with every intermediate tensor kept
(LiteRT's `experimental_preserve_all_tensors`, builtin kernels: XNNPACK would fuse the intermediates away), op outputs
aligned, and per layer the error of the int8 output against the float one: SNR (dB), cosine similarity, max abs error,
and the SNR of the noise the layer itself added (its output's relative noise less its inputs'), by which layers are
ranked: a layer that is hard to quantize adds noise there, and every later layer inherits it without causing it.

Alignment: the same converter makes both files from one graph, so ops pair up by (op, output shape, the first name
token of the output tensor), k-th with k-th, then by (op, shape) for what is left.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from pathlib import Path

import numpy as np

from ..core import records
from ..core.errors import EdgeError

SNR_FLOOR_DB = 20.0  # below this a layer's output is visibly damaged (the verdict names such layers)
SKIPPED_OPS = {"QUANTIZE", "DEQUANTIZE", "DELEGATE"}  # the int8 file's interface, not layers of the model
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
CAPPED_DB = 99.0  # an exact output (no error) is shown as this many dB


def debug_runner(path: Path):
    """A TFLiteRunner whose interpreter keeps every intermediate tensor (builtin kernels, one thread)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from .runners import TFLiteRunner

    def interpreter(model_path: str) -> Interpreter:
        return Interpreter(
            model_path=model_path,
            num_threads=1,
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )

    return TFLiteRunner(path, make_interpreter=interpreter)


def module_name(tensor_name: str) -> str | None:
    """The torch module a litert-torch tensor comes from ("layer1.0.conv1"), read from its name's module path
    ("models.resnet.ResNet/torch.nn.modules.container.Sequential_layer1/models.resnet.BasicBlock_0/..Conv2d_conv1");
    None for other converters' names."""
    if "torch.nn.modules." not in tensor_name:
        return None
    best = None
    for part in tensor_name.split(";"):
        segments = [s.rpartition(".")[2] for s in part.split("/")]
        attrs = [s.partition("_")[2] for s in segments[1:] if "_" in s]
        if attrs and any(s.startswith(("Conv2d_", "Linear_")) for s in segments):
            return ".".join(attrs)
        best = best or (".".join(attrs) if attrs else None)
    return best


def layers(runner) -> list[dict]:
    """The file's op outputs in graph order (interface ops left out), with what each reads."""
    interp = runner.interpreter
    details = {d["index"]: d for d in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():  # noqa: SLF001  the only public listing of ops with their tensors
        if op["op_name"] in SKIPPED_OPS or len(op["outputs"]) == 0:
            continue
        t = details[op["outputs"][0]]
        out.append(
            {
                "op": op["op_name"],
                "tensor": int(t["index"]),
                "name": t["name"],
                "shape": [int(s) for s in t["shape"]],
                "dtype": np.dtype(t["dtype"]).name,
                "inputs": [int(i) for i in op["inputs"] if i >= 0],
            }
        )
    return out


def align(quant: list[dict], ref: list[dict]) -> list[tuple[dict, dict]]:
    """Pairs (int8 layer, float layer), in the int8 file's order."""
    pairs: dict[int, dict] = {}
    keys = (
        lambda lay: (lay["op"], tuple(lay["shape"]), lay["name"].split(";")[0]),
        lambda lay: (lay["op"], tuple(lay["shape"])),
    )
    used: set[int] = set()
    for key in keys:
        free = defaultdict(deque)
        for r in ref:
            if r["tensor"] not in used:
                free[key(r)].append(r)
        for i, q in enumerate(quant):
            if i not in pairs and free[key(q)]:
                r = free[key(q)].popleft()
                pairs[i] = r
                used.add(r["tensor"])
    return [(quant[i], pairs[i]) for i in sorted(pairs)]


def _dequantize(interp, index: int) -> np.ndarray:
    d = interp._get_tensor_details(index, 0)  # noqa: SLF001  public get_tensor_details lists only some tensors
    x = interp.get_tensor(index).astype(np.float64)
    params = d["quantization_parameters"]
    if len(params["scales"]) == 1 and d["dtype"] != np.float32:
        x = (x - params["zero_points"][0]) * params["scales"][0]
    return x


class _Error:
    """Running sums of one aligned pair over the images."""

    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.q2 = 0.0
        self.max_abs = 0.0

    def add(self, q: np.ndarray, f: np.ndarray) -> None:
        finite = np.isfinite(q) & np.isfinite(f)  # max-pool padding is -inf in float, the lowest int8 in int8
        q, f = q[finite], f[finite]
        e = q - f
        self.signal += float((f * f).sum())
        self.noise += float((e * e).sum())
        self.dot += float((q * f).sum())
        self.q2 += float((q * q).sum())
        self.max_abs = max(self.max_abs, float(np.abs(e).max()) if e.size else 0.0)

    @property
    def snr_db(self) -> float:
        if self.noise == 0:
            return CAPPED_DB
        return min(CAPPED_DB, 10 * math.log10(max(self.signal, 1e-30) / self.noise))

    @property
    def relative_noise(self) -> float:
        return self.noise / max(self.signal, 1e-30)

    @property
    def cosine(self) -> float:
        norm = math.sqrt(self.signal * self.q2)
        return self.dot / norm if norm else 1.0


def explain(artifact: Path, reference: Path, images: np.ndarray) -> dict:
    """Per-layer error of `artifact` (int8 TFLite) against `reference` (its float sibling) on `images` (NCHW,
    normalised). Layers come in graph order; `worst` lists five layer indices, the one adding most noise first."""
    quant, ref = debug_runner(artifact), debug_runner(reference)
    if quant.precision in ("fp32", "fp16"):
        raise EdgeError(f"{artifact}: a float file ({quant.precision}); explain an int8 or mixed one")
    q_layers, r_layers = layers(quant), layers(ref)
    pairs = align(q_layers, r_layers)
    if len(pairs) < 0.8 * len(q_layers):
        raise EdgeError(
            f"{artifact}: only {len(pairs)} of its {len(q_layers)} layers have a match in {reference}: "
            f"the two files do not come from one converter and one model"
        )
    inputs = [(quant.input["index"], ref.input["index"])]
    errors = {qi: _Error() for qi, _ in inputs} | {q["tensor"]: _Error() for q, _ in pairs}
    tracked = inputs + [(q["tensor"], r["tensor"]) for q, r in pairs]
    for i in range(len(images)):
        quant(images[i : i + 1])
        ref(images[i : i + 1])
        for qi, ri in tracked:
            qv, rv = _dequantize(quant.interpreter, qi), _dequantize(ref.interpreter, ri)
            errors[qi].add(qv, rv.reshape(qv.shape))  # one converter: the same layout in both files
    noise = {t: e.relative_noise for t, e in errors.items()}
    counts, totals = Counter(), Counter(q["op"] for q, _ in pairs)
    producer = {q["tensor"]: i for i, (q, _) in enumerate(pairs)}  # tensor -> the row that writes it
    rows = []
    for q, r in pairs:
        counts[q["op"]] += 1
        e = errors[q["tensor"]]
        before = max((noise[t] for t in q["inputs"] if t in noise), default=0.0)
        added = e.relative_noise - before
        module = module_name(q["name"])
        rows.append(
            {
                "index": len(rows),
                "module": module,
                "layer": module or f"{q['op'].lower()} {counts[q['op']]}/{totals[q['op']]}",
                "op": q["op"],
                "shape": q["shape"],
                "int8": q["dtype"] in ("int8", "uint8"),
                "snr_db": round(e.snr_db, 2),
                "snr_added_db": round(min(CAPPED_DB, -10 * math.log10(added)) if added > 0 else CAPPED_DB, 2),
                "cosine": round(e.cosine, 6),
                "max_abs_err": float(f"{e.max_abs:.6g}"),
                "tensor": q["name"],
                "reference_tensor": r["name"],
                "reads": [producer[t] for t in q["inputs"] if t in producer],
            }
        )
    worst = sorted(range(len(rows)), key=lambda i: rows[i]["snr_added_db"])[:5]
    return {
        "artifact": str(artifact),
        "reference": str(reference),
        "images": int(len(images)),
        "input_snr_db": round(errors[inputs[0][0]].snr_db, 2),
        "layers": rows,
        "worst": worst,
        "unmatched": len(q_layers) - len(pairs),
        "verdict": verdict(rows, worst),
    }


def verdict(rows: list[dict], worst: list[int]) -> str:
    """One line: which layers lose most, or that none falls below the floor."""
    if not rows:
        return "no layers"
    final, lowest = rows[-1]["snr_db"], min(rows, key=lambda r: r["snr_db"])
    if lowest["snr_db"] >= SNR_FLOOR_DB:
        return (
            f"no layer below {SNR_FLOOR_DB:.0f} dB (lowest: {lowest['layer']}, {lowest['snr_db']:.1f} dB; "
            f"output {final:.1f} dB)"
        )
    named = [
        f"{rows[i]['layer']} ({rows[i]['op']}, adds noise at {rows[i]['snr_added_db']:.1f} dB SNR)" for i in worst[:2]
    ]
    return f"{' and '.join(named)} lose most; output {final:.1f} dB"


def reference_for(ctx, rel: str) -> Path:
    """The float file an int8 row is explained against: the same converter's fp32 file of the same weights. onnx2tf
    rows have their sibling (`x_int8` -> `x_fp32`); litert-torch rows the litert fp32 file of their checkpoint, made
    here (explain/refs/) for a compressed checkpoint that has none."""
    layout = ctx.layout
    record = records.read(layout, rel)
    if "litert-torch" not in ((record.get("build") or {}).get("method") or ""):
        sibling = layout.path(rel.replace("_fallback", "").replace("int8.tflite", "fp32.tflite"))
        if sibling == layout.path(rel):
            raise EdgeError(
                f"{rel}: not an int8 file of the run (precision "
                f"{(record.get('build') or {}).get('precision') or 'unknown'}), so it has no float sibling; "
                "explain compares an int8 file with its float one: name that one with reference="
            )
        if not sibling.is_file():
            raise EdgeError(
                f"{rel}: no float sibling {layout.rel(sibling)} to explain it against; name one with reference="
            )
        return sibling
    parent = layout.path((record.get("evaluation") or {}).get("parent") or layout.rel(layout.best))
    if parent == layout.best:
        return ctx.require(layout.tflite("fp32_litert"), "litert")
    ref = layout.root / "explain" / "refs" / f"{parent.stem}_fp32_litert.tflite"
    if not ref.is_file() or ref.stat().st_mtime < parent.stat().st_mtime:
        from .checkpoint import load_checkpoint, model_from_checkpoint
        from .torch_to_tflite import convert_fp32

        convert_fp32(model_from_checkpoint(load_checkpoint(parent)), ctx.examples, ref)
    return ref
