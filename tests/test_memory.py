"""Memory attribution (device_tests/tflite_memory.py) on the tiny run's real TFLite files, each mode in a fresh
process as the benchmark stage and bench/memory.py run it."""

import shutil
import sys

import pytest
from conftest import ROOT

from pipeline.core.artifacts import MIB
from pipeline.stages.benchmark import benchmark_one

sys.path.insert(0, str(ROOT / "device_tests"))
from tflite_memory import graph_floor  # noqa: E402

PARTS = ("file_mib", "loaded_mib", "cache_mib", "packed_mib", "arena_mib", "invoke_mib")


def memory(path, mode):
    cell = benchmark_one(path, [], [1], warmup=2, runs=5, mode=mode)["threads"]["1"]
    assert "error" not in cell, cell
    return cell["memory"]


@pytest.fixture
def fp32_copy(tiny_run, tmp_path):
    target = tmp_path / "fp32.tflite"  # the weight cache is written beside it: never into the shared run
    shutil.copyfile(tiny_run.run_dir / "tflite" / "fp32.tflite", target)
    return target


def test_parts_add_up_and_xnnpack_packs_a_copy_of_every_weight(fp32_copy):
    """The fp32 file (2.7 MiB): below about half a MiB, freed heap the process already holds absorbs allocations
    without adding to its resident memory."""
    size = fp32_copy.stat().st_size / MIB
    m = memory(fp32_copy, "interpreter")
    assert sum(m[k] for k in PARTS) == pytest.approx(m["model_mib"], rel=0.10)
    assert m["file_mib"] == pytest.approx(size, rel=0.05, abs=0.05)  # every page of the file read (packing reads all)
    assert m["packed_mib"] >= 0.8 * m["weights_mib"]  # a packed copy beside the mapped file
    assert m["vs_floor"] == pytest.approx(m["model_mib"] / m["floor_mib"]) and m["vs_floor"] > 1.6
    assert m["code_mib"] > 0 and m["rss_added_mib"] == pytest.approx(m["model_mib"] + m["code_mib"])

    plain = memory(fp32_copy, "interpreter_plain")  # TFLite's own kernels read the weights in place
    assert sum(plain[k] for k in PARTS) == pytest.approx(plain["model_mib"], rel=0.10)
    assert plain["packed_mib"] < 0.1 * plain["weights_mib"]
    assert plain["model_mib"] < m["model_mib"] - 0.7 * m["weights_mib"]

    read = memory(fp32_copy, "interpreter_bytes")  # the file in a Python bytes object, not mapped: private memory
    assert read["loaded_mib"] == pytest.approx(size) and read["file_mib"] == 0
    assert sum(read[k] for k in PARTS) == pytest.approx(read["model_mib"], rel=0.10)
    assert read["anon_mib"] > m["anon_mib"] + 0.8 * size


def test_weight_cache_moves_the_packed_weights_to_a_mapped_file(fp32_copy):
    pytest.importorskip("ai_edge_litert.compiled_model")
    cold = memory(fp32_copy, "compiled_cache")
    cache = fp32_copy.parent / "fp32.tflite.xnnpack_cache"
    assert cache.is_file() and cold["cache_file_mib"] == pytest.approx(cache.stat().st_size / MIB)
    warm = memory(fp32_copy, "compiled_cache")  # maps the cache the first run wrote
    plain = memory(fp32_copy, "compiled")
    assert warm["cache_mib"] == pytest.approx(warm["cache_file_mib"], rel=0.05, abs=0.05)
    assert warm["file_mib"] < plain["file_mib"] - 0.5 * plain["weights_mib"]  # the weights' pages are not read again
    assert warm["anon_mib"] < plain["anon_mib"] - 0.5 * plain["weights_mib"]


def test_fp16_as_shipped_splits_into_parts_that_add_up_with_none_negative(tiny_run, tmp_path):
    """An fp16 file's weights are dequantized to fp32 by DEQUANTIZE ops: TFLite's own kernels hold those copies as
    activations, XNNPACK packs them from the fp16 constants (into the weight cache, as shipped). Counted as both,
    `other` went negative (-31.9 MiB for ResNet-18 at 224 px)."""
    pytest.importorskip("ai_edge_litert.compiled_model")
    from ai_edge_litert.interpreter import Interpreter

    target = tmp_path / "fp16.tflite"
    shutil.copyfile(tiny_run.run_dir / "tflite" / "fp16.tflite", target)
    fp16 = graph_floor(Interpreter(model_path=str(target)))
    fp32 = graph_floor(Interpreter(model_path=str(tiny_run.run_dir / "tflite" / "fp32.tflite")))
    assert fp16["activations_mib"] > fp32["activations_mib"] + 0.9 * fp32["weights_mib"]  # the fp32 copies, held
    assert fp16["xnnpack_activations_mib"] == pytest.approx(fp32["activations_mib"], rel=0.01)  # not under XNNPACK
    memory(target, "compiled_cache")  # the first launch writes the weight cache
    m = memory(target, "compiled_cache")
    parts = [m[k] for k in PARTS]
    assert min(parts) >= 0 and m["other_mib"] >= 0, m
    assert sum(parts) + m["other_mib"] == pytest.approx(max(0.0, m["model_mib"]), abs=1e-9)
    assert m["arena_mib"] <= fp32["activations_mib"] + 0.01  # the activations only, the weights not counted again


def test_floor_weights_are_the_files_constants(tiny_run):
    """fp32 file: 4 bytes a folded parameter (conv and fc weights, one bias per output channel); int8: about a
    quarter of that (int32 biases, per-channel scales aside)."""
    import numpy as np
    import torch
    from ai_edge_litert.interpreter import Interpreter

    state = torch.load(tiny_run.run_dir / "train" / "best.pt", weights_only=True)["model"]
    weights = sum(v.numel() for k, v in state.items() if k.endswith("weight") and v.ndim > 1)
    biases = sum(
        v.numel()
        for k, v in state.items()
        if k.endswith(("bn1.weight", "bn2.weight", "downsample.1.weight", "fc.bias"))
    )
    fp32 = graph_floor(Interpreter(model_path=str(tiny_run.run_dir / "tflite" / "fp32.tflite")))
    assert fp32["weights_mib"] * MIB == pytest.approx(4 * (weights + biases), rel=0.01)
    int8 = graph_floor(Interpreter(model_path=str(tiny_run.run_dir / "tflite" / "int8.tflite")))
    assert int8["weights_mib"] * MIB == pytest.approx(weights + 4 * biases, rel=0.02)
    # the input and the stem's output are alive together at the first op: the peak is at least that
    stem = int(np.prod([16, 16, state["conv1.weight"].shape[0]])) * 4
    assert fp32["activations_mib"] * MIB >= stem + 32 * 32 * 4
    assert int8["activations_mib"] < fp32["activations_mib"]
    # XNNPACK's indirection buffers: the 7x7 stride-2 stem's 14x14 outputs x 49 taps x a pointer is the largest
    assert fp32["indirection_largest_mib"] * MIB == 14 * 14 * 49 * 8 == int8["indirection_largest_mib"] * MIB
    assert fp32["indirection_mib"] > fp32["indirection_largest_mib"]  # and every 3x3 conv adds its own


def test_latency_figures_leave_out_the_first_and_warm_up_runs(tiny_run, tmp_path):
    """A model whose first runs are slow (caches, lazily packed weights; here each of the first calls sleeps 40 ms
    inside the real Interpreter's invoke): the first run is its own figure, the warm-up is in no figure, and min,
    median and p90 are the timed runs' alone, which take well under 40 ms on any host."""
    import time

    from ai_edge_litert.interpreter import Interpreter
    from tflite_memory import attribute

    warmup, runs = 8, 5

    class ColdStart(Interpreter):
        calls = 0

        def invoke(self):
            ColdStart.calls += 1
            if ColdStart.calls <= 1 + warmup:  # the first inference and the warm-up
                time.sleep(0.04)
            return super().invoke()

    ColdStart.__module__ = Interpreter.__module__  # the same op resolvers as the class it extends
    path = tmp_path / "int8.tflite"
    shutil.copyfile(tiny_run.run_dir / "tflite" / "int8.tflite", path)
    row, _ = attribute(str(path), "interpreter", 1, ColdStart, warmup, runs)
    assert ColdStart.calls == 1 + warmup + runs
    assert row["first_ms"] >= 40
    assert row["latency_ms_min"] <= row["latency_ms_median"] <= row["latency_ms_p90"] < 20
