"""Host benchmark: one subprocess per artifact and thread count, through the same runners as evaluation."""

import json

from pipeline.benchmark import benchmark
from pipeline.cli import main


def test_benchmark_rows_for_each_format(tiny_run, capsys):
    run = tiny_run.run_dir
    artifacts = [run / "tflite" / "int8.tflite", run / "tflite" / "fp32.tflite", run / "onnx" / "model.onnx"]
    assert main(["benchmark", *map(str, artifacts), "runs=5", "warmup=2", "bench_threads=1"]) == 0
    rows = {p.name: json.loads((run / "bench" / f"{p.stem}.json").read_text()) for p in artifacts}
    for name, row in rows.items():
        t1 = row["t1"]
        assert t1["runs"] == 5 and 0 < t1["latency_ms_min"] <= t1["latency_ms_median"] <= t1["latency_ms_p90"]
        assert t1["peak_rss_mib"] > 10 and row["size_mib"] > 0 and row["gzip_mib"] > 0
        assert row["input_shape"] == [1, 1, 28, 28] and row["host"]["cores"] >= 1
    assert rows["int8.tflite"]["size_mib"] < 0.3 * rows["fp32.tflite"]["size_mib"]
    # the TFLite worker loads LiteRT and numpy only: no torch in its memory
    assert rows["int8.tflite"]["t1"]["peak_rss_mib"] < 200


def test_broken_artifact_becomes_a_row(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    row = benchmark([bad], [1, 1, 28, 28], tmp_path, threads=[1], warmup=1, runs=2)[0]
    assert "LiteRT cannot load it" in row["t1"]["error"]


def test_latency_bench_same_weights_at_larger_size_joins_the_report(tiny_run):
    """bench/latency.py re-exports the run's weights at another input size through every runtime; report shows it."""
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.report import report

    root = Path(__file__).resolve().parents[1]
    run = tiny_run.run_dir
    proc = subprocess.run([sys.executable, str(root / "bench" / "latency.py"), f"runs_dir={run.parent}",
                           f"name={run.name}", "image_size=56", "runs=3", "warmup=1", "threads=1", "calib=8",
                           "mobilenet=false"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((run / "bench" / "latency_56.json").read_text())
    rows = {(r["runtime"], r["precision"]): r for r in table["rows"]}
    assert set(rows) == {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("tflite", "fp32"),
                         ("tflite", "fp16"), ("tflite", "dynamic_range"), ("tflite", "int8")}
    assert all(r["ms_1"] > 0 and r["errors"] is None for r in rows.values())
    assert rows[("tflite", "fp32")]["speedup_vs_tflite_fp32"] == 1.0
    assert rows[("tflite", "int8")]["size_mib"] < 0.3 * rows[("tflite", "fp32")]["size_mib"]
    from ai_edge_litert.interpreter import Interpreter

    shape = Interpreter(model_path=str(run / "bench56" / "model_int8.tflite")).get_input_details()[0]["shape"]
    assert shape.tolist() == [1, 56, 56, 1]  # the 28 px run's weights, at 56 px
    assert "| resnet18 | tflite | int8 |" in proc.stdout
    md = report(run)["md"].read_text()
    assert "## Latency at 56x56 (bench/latency.py)" in md and "| resnet18 | onnxruntime | int8 |" in md
