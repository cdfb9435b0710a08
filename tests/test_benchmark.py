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
