"""Where a .tflite model's memory goes, measured inside the process that runs it (Linux and Android /proc), with
numpy and one TFLite runtime only: the one implementation behind bench_tflite.py on a board and resnet-edge's host
benchmark.

Ways to run a model (`mode`), each measured the same way:
    interpreter        Interpreter(model_path=...): the file mapped, XNNPACK (every runtime's default CPU path)
                       packs a copy of every weight into anonymous memory
    interpreter_plain  the same without XNNPACK (TFLite's built-in kernels read the weights in place)
    interpreter_bytes  Interpreter(model_content=the file read into a Python bytes object) instead of mapping it
    compiled           LiteRT's CompiledModel (ai-edge-litert >= 2): XNNPACK as above
    compiled_cache     CompiledModel with XNNPACK's weight cache: packed weights written once to a cache file next
                       to the model (<model>.xnnpack_cache) and mapped from it after, file-backed instead of anonymous
    compiled_lean      compiled_cache, and XNNPACK's transient indirection buffers: the pointer tables of
                       convolutions (one per output pixel and kernel tap) rebuilt at each inference instead of kept

What it reports (MiB = 2^20 bytes; anonymous memory is what counts against an app: the OS cannot drop it, while
clean file-backed pages are shared with the page cache and reclaimable):
    baseline_mib       resident before the model: interpreter, runtime, numpy
    rss_added_mib      resident after loading and running it, less baseline
    code_mib           of that, pages of other mapped files: the runtime's libraries, first touched by this model,
                       shared by every model of an app and with other processes, so not the model's
    model_mib          rss_added_mib less code_mib: the model's measured memory
    file_mib           pages of the .tflite file resident (the mapping's Rss in /proc/self/smaps)
    loaded_mib         the file read into memory (interpreter_bytes)
    cache_mib          pages of the weight cache file resident (compiled_cache)
    packed_mib         anonymous memory added while preparing, less the arena: XNNPACK's packed weights (unless
                       cached) and its operators' own buffers (indirection buffers of convolutions and pools: a
                       pointer per output pixel and kernel tap, MiBs at 224x224)
    indirection_mib    from the file: those convolutions' pointers (indirection_largest_mib: the largest one's, what
                       compiled_lean keeps while that convolution runs)
    arena_mib          activation memory: the interpreter's tensor arena as laid out by the runtime (the span of its
                       non-constant tensors' buffers) where it owns the activations, else (XNNPACK) the graph's peak
                       live activations (arena_source says which; under XNNPACK without the fp32 copies of fp16
                       weights, which it packs from the fp16 constants)
    invoke_mib         anonymous memory first touched by running (scratch buffers allocated lazily)
    other_mib          model_mib less the parts above (allocator slack, other files): what the parts miss; the parts
                       never overshoot the total (settle: the inferred ones give way), so it is never negative
    peak_extra_mib     peak resident (VmHWM) above the resident after running: transient memory of an inference
    anon_mib, file_backed_mib   model_mib split by kind
    floor_mib          weights as stored (constant tensors) + peak live activations of one inference, from the file
"""

from __future__ import annotations

import os
import struct
import time

MIB = 2**20
MODES = ("interpreter", "interpreter_plain", "interpreter_bytes", "compiled", "compiled_cache", "compiled_lean")
# How the device bundle runs a file where the runtime has LiteRT's CompiledModel (bench_tflite.py --mode auto), and so
# the memory the report quotes as shipped (the benchmark stage measures it with the cache written, as on a second
# launch)
SHIPPED_MODE = "compiled_cache"
# XNNPACK delegate flags (tflite/delegates/xnnpack/xnnpack_delegate.h): int8 and uint8 kernels (on by default; a
# CpuOptions.xnnpack_flags value replaces the defaults), and indirection buffers built per inference instead of kept
XNNPACK_QS8, XNNPACK_QU8, XNNPACK_TRANSIENT_INDIRECTION_BUFFER = 0x1, 0x2, 0x20


def proc_status() -> dict[str, float]:
    """This process's resident memory in MiB, exact (summed over /proc/self/smaps, where /proc/self/status's counters
    lag by up to 64 pages a thread; not getrusage's ru_maxrss, which a child inherits from its parent): VmRSS, RssAnon
    (anonymous memory outside file mappings: heap and mmap'd buffers), RssFile (the rest), the peak VmHWM (status), and
    `files`, the resident MiB of each mapped file by real path. Empty where there is no /proc."""
    out = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0, "files": {}}
    path = None
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()
                if head and not head[0].endswith(":"):  # a mapping's first line: range perms offset dev inode [path]
                    path = os.path.realpath(head[5]) if len(head) >= 6 and head[5].startswith("/") else None
                elif head and head[0] == "Rss:":
                    mib = int(head[1]) / 1024
                    out["VmRSS"] += mib
                    if path:
                        out["files"][path] = out["files"].get(path, 0.0) + mib
                elif head and head[0] == "Anonymous:" and not path:  # a library's copied-on-write pages stay its own
                    out["RssAnon"] += int(head[1]) / 1024
        with open("/proc/self/status") as f:
            out["VmHWM"] = next(int(ln.split()[1]) / 1024 for ln in f if ln.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return {}
    out["RssFile"] = out["VmRSS"] - out["RssAnon"]
    return out


def graph_floor(interpreter) -> dict:
    """Weights as stored and the peak live activations of one inference, from an interpreter's graph (before any
    delegate: ops in execution order). A constant is a tensor no op produces that is not a graph input; an
    activation lives from the op that makes it (or the start, for inputs) to the last op that reads it."""
    import numpy as np

    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    nbytes = {i: int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for i, d in tensors.items()}
    inputs = [d["index"] for d in interpreter.get_input_details()]
    outputs = [d["index"] for d in interpreter.get_output_details()]
    made = {t: k for k, op in enumerate(ops) for t in op["outputs"] if t >= 0}
    born = {**{t: -1 for t in inputs}, **made}
    last = {}
    for k, op in enumerate(ops):
        for t in op["inputs"]:
            if t in born:
                last[t] = k
    for t in outputs:
        last[t] = len(ops)
    constants = {t for op in ops for t in op["inputs"] if t >= 0 and t not in born}

    def peak(excluded=frozenset()) -> int:
        """The most bytes of activations live at once, op by op (`excluded`: tensors that are not activations)."""
        return max(
            (
                sum(nbytes[t] for t in born if t not in excluded and born[t] <= k <= last.get(t, born[t]))
                for k in range(len(ops))
            ),
            default=0,
        )

    # weights stored in fp16 and dequantized to fp32 by an op: XNNPACK packs them from the fp16 constants, so their
    # fp32 copies are never live under it (its packed weights count them); TFLite's own kernels hold them
    unpacked = {
        t
        for op in ops
        if op["op_name"] == "DEQUANTIZE" and all(i in constants for i in op["inputs"] if i >= 0)
        for t in op["outputs"]
    }
    peak_all, peak_xnnpack = peak(), peak(unpacked)
    weights = sum(nbytes[t] for t in constants)
    # XNNPACK's convolutions (not 1x1) keep an indirection buffer: a pointer per output pixel and kernel tap
    pointers = []
    for op in ops:
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            taps = int(np.prod(tensors[op["inputs"][1]]["shape"][1:3]))  # kernel height x width (OHWI, 1HWC)
            if taps > 1:
                pixels = int(np.prod(tensors[op["outputs"][0]]["shape"][1:3]))
                pointers.append(pixels * taps * struct.calcsize("P"))
    return {
        "weights_mib": weights / MIB,
        "activations_mib": peak_all / MIB,
        "xnnpack_activations_mib": peak_xnnpack / MIB,
        "floor_mib": (weights + peak_all) / MIB,
        "indirection_mib": sum(pointers) / MIB,
        "indirection_largest_mib": max(pointers, default=0) / MIB,
    }


def arena_span_mib(interpreter) -> float:
    """The span of the interpreter's buffers of non-constant tensors (where the runtime placed them): its arena."""
    starts, ends = [], []
    floor_inputs = {t for op in interpreter._get_ops_details() for t in op["outputs"]}
    floor_inputs |= {d["index"] for d in interpreter.get_input_details()}
    for t in floor_inputs:
        try:
            array = interpreter.tensor(t)()
        except ValueError:  # not allocated: inside a delegated partition
            continue
        start = array.__array_interface__["data"][0]
        starts.append(start)
        ends.append(start + array.nbytes)
    return (max(ends) - min(starts)) / MIB if starts else 0.0


class Runner:
    """One model in one mode: __call__(x as the model's input dtype) -> first output as a numpy array."""

    def __init__(self, path: str, mode: str, threads: int, interpreter_cls, delegates=None) -> None:
        import numpy as np

        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
        self.np, self.mode, self.path = np, mode, path
        self.cache = f"{path}.xnnpack_cache" if mode in ("compiled_cache", "compiled_lean") else None
        if mode.startswith("interpreter"):
            kwargs = _plain_kwargs(interpreter_cls) if mode == "interpreter_plain" else {}
            if mode == "interpreter_bytes":
                with open(path, "rb") as f:
                    self.content = f.read()  # kept: the interpreter reads the model from it for its lifetime
                kwargs["model_content"] = self.content
            else:
                kwargs["model_path"] = path
            self.interpreter = interpreter_cls(num_threads=threads, experimental_delegates=delegates, **kwargs)
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            return
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.options import CpuOptions, Options
        except ImportError as e:
            raise ValueError(f"mode {mode}: needs ai-edge-litert >= 2 (LiteRT's CompiledModel)") from e
        cpu = CpuOptions(num_threads=threads, xnnpack_weight_cache_path=self.cache or "")
        if mode == "compiled_lean":
            cpu.xnnpack_flags = XNNPACK_QS8 | XNNPACK_QU8 | XNNPACK_TRANSIENT_INDIRECTION_BUFFER
        self.model = CompiledModel.from_file(path, options=Options(cpu_options=cpu))
        self.inputs, self.outputs = self.model.create_input_buffers(0), self.model.create_output_buffers(0)
        key = next(iter(self.model.get_signature_list()))  # the first signature, as run_by_index(0) runs
        self.input = next(iter(self.model.get_input_tensor_details(key).values()))
        self.output = next(iter(self.model.get_output_tensor_details(key).values()))

    def __call__(self, x):
        if self.mode.startswith("interpreter"):
            self.interpreter.set_tensor(self.input["index"], x)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output["index"])
        self.inputs[0].write(x)
        self.model.run_by_index(0, self.inputs, self.outputs)
        shape = [int(d) for d in self.output["shape"]]
        return self.outputs[0].read(int(self.np.prod(shape)), self.np.dtype(self.output["dtype"])).reshape(shape)


def timed(runner, x, warmup: int, runs: int) -> list[float]:
    """ms of each of `runs` calls after `warmup` untimed ones: the one timing loop (resnet-edge's host benchmark uses
    it for every format)."""
    for _ in range(warmup):
        runner(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner(x)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def latency_figures(times: list[float]) -> dict:
    """The figures every row gives of a timing loop's ms: median, p90 and min."""
    import numpy as np

    return {
        "latency_ms_median": float(np.median(times)),
        "latency_ms_p90": float(np.percentile(times, 90)),
        "latency_ms_min": float(np.min(times)),
    }


def attribute(
    path: str, mode: str, threads: int, interpreter_cls, warmup: int = 10, runs: int = 50, delegates=None
) -> tuple[dict, Runner]:
    """Load, prepare and run `path` in `mode`, reading /proc between the steps; times as well (load, first
    inference, steady median). Returns the figures and the runner (still loaded: evaluate with it after). Call it
    first thing in a fresh process: whatever the process held before counts as baseline."""
    import numpy as np

    _release_free_heap()
    base, base_threads = proc_status(), os_threads()
    start = time.perf_counter()
    runner = Runner(path, mode, threads, interpreter_cls, delegates)
    load_ms = (time.perf_counter() - start) * 1e3
    prepared, threads_started = proc_status(), os_threads() - base_threads
    shape = [int(d) for d in runner.input["shape"]]
    dtype = np.dtype(runner.input["dtype"])
    x = np.zeros(shape, dtype) if dtype.kind in "iu" else np.random.default_rng(0).standard_normal(shape).astype(dtype)
    start = time.perf_counter()
    runner(x)
    first_ms = (time.perf_counter() - start) * 1e3
    times = timed(runner, x, warmup, runs)
    ran = proc_status()
    row = {
        "mode": mode,
        "threads": threads,
        "load_ms": load_ms,
        "first_ms": first_ms,
        **latency_figures(times),
        "runtime_threads": threads_started,
    }
    if not base:  # no /proc (macOS, Windows): times only
        return row, runner
    if mode == "interpreter_plain":
        arena, source = arena_span_mib(runner.interpreter), "runtime"
    else:
        arena, source = None, "graph"
    maps, base_maps = ran["files"], base["files"]
    file_mib = maps.get(os.path.realpath(path), 0.0)
    cache_mib = maps.get(os.path.realpath(runner.cache), 0.0) if runner.cache else 0.0
    own = {os.path.realpath(path), os.path.realpath(runner.cache) if runner.cache else None}
    code = sum(maps.get(p, 0.0) - base_maps.get(p, 0.0) for p in set(maps) | set(base_maps) if p not in own)
    floor = graph_floor(interpreter_cls(model_path=path, **_plain_kwargs(interpreter_cls)))  # after the readings
    arena = floor["xnnpack_activations_mib"] if arena is None else arena
    added = ran["VmRSS"] - base["VmRSS"]
    model = added - code
    # the arena's pages count where they were first touched: while running (TFLite's own kernels) or preparing
    prep, run = prepared["RssAnon"] - base["RssAnon"], max(0.0, ran["RssAnon"] - prepared["RssAnon"])
    arena_run = min(arena, run)
    loaded = len(runner.content) / MIB if getattr(runner, "content", None) else 0.0
    packed, invoke = max(0.0, prep - (arena - arena_run) - loaded), run - arena_run
    parts = {
        "file_mib": file_mib,
        "loaded_mib": loaded,
        "cache_mib": cache_mib,
        "packed_mib": packed,
        "arena_mib": arena,
        "invoke_mib": invoke,
    }
    parts = settle(parts, model)
    row |= {
        "baseline_mib": base["VmRSS"],
        "rss_added_mib": added,
        "code_mib": code,
        "model_mib": model,
        **parts,
        "arena_source": source,
        "other_mib": max(0.0, model) - sum(parts.values()),
        "peak_extra_mib": max(0.0, ran["VmHWM"] - ran["VmRSS"]),
        "peak_rss_mib": ran["VmHWM"],
        "anon_mib": ran["RssAnon"] - base["RssAnon"],
        "file_backed_mib": ran["RssFile"] - base["RssFile"],
        "weights_mib": floor["weights_mib"],
        "activations_mib": floor["activations_mib"],
        "floor_mib": floor["floor_mib"],
        "indirection_mib": floor["indirection_mib"],
        "indirection_largest_mib": floor["indirection_largest_mib"],
        "vs_floor": model / floor["floor_mib"] if floor["floor_mib"] else None,
        "cache_file_mib": os.path.getsize(runner.cache) / MIB
        if runner.cache and os.path.isfile(runner.cache)
        else None,
    }
    return row, runner


ESTIMATED = ("arena_mib", "invoke_mib", "packed_mib")  # the parts inferred, not read off a mapping: trimmed first


def settle(parts: dict[str, float], model: float) -> dict[str, float]:
    """The parts so that none is negative and they add up to no more than the model's measured memory (the rest is
    `other`, never negative): where they overshoot (an estimate above what was resident, pages counted twice), the
    inferred parts give way first, then the measured ones."""
    parts = {k: max(0.0, v) for k, v in parts.items()}
    over = sum(parts.values()) - max(0.0, model)
    for key in (*ESTIMATED, *(k for k in parts if k not in ESTIMATED)):
        if over <= 0:
            break
        cut = min(over, parts[key])
        parts[key] -= cut
        over -= cut
    return parts


def _release_free_heap() -> None:
    """Hand the heap's free pages back to the OS (glibc's malloc_trim), so that what the model allocates shows as
    resident memory it added instead of reusing pages the baseline already counted."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (Android's bionic, musl, macOS): measured as it is
        pass


def os_threads() -> int:
    """OS threads of this process: a runtime's pool of N threads adds N - 1 (0 without /proc)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def _plain_kwargs(interpreter_cls) -> dict:
    module = __import__(interpreter_cls.__module__, fromlist=["OpResolverType"])
    resolver = getattr(module, "OpResolverType", None)
    return {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if resolver else {}
