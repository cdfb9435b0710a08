"""Host benchmark: one subprocess per artifact and thread count, through the same runners as evaluation; the
latency bench script reads a run and writes only beside it."""

import json

import pytest
from conftest import bench_script

from pipeline.cli import main
from pipeline.stages.benchmark import benchmark


def test_benchmark_verb_records_each_format_at_each_thread_count(tiny_run, tmp_path, capsys):
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "bench")
    run = cfg.run_dir
    artifacts = ["tflite/int8.tflite", "tflite/fp32.tflite", "onnx/model.onnx"]
    assert (
        main(["benchmark", *(str(run / a) for a in artifacts), "bench_runs=5", "bench_warmup=2", "bench_threads=1,2"])
        == 0
    )
    rows = {a: json.loads((run / "results" / f"{a}.json").read_text())["benchmark"] for a in artifacts}
    for name, row in rows.items():
        assert row["runs"] == 5 and row["warmup"] == 2 and row["input_shape"] == [1, 1, 28, 28]
        t1, t2 = row["threads"]["1"], row["threads"]["2"]
        assert 0 < t1["latency_ms_min"] <= t1["latency_ms_median"] <= t1["latency_ms_p90"]
        assert t1["peak_rss_mib"] > 10 and t1["threads"] == 1 and t2["threads"] == 2
        # the runtime really ran the thread count it was given: its pool adds an OS thread per extra thread
        assert t2["runtime_threads"] == t1["runtime_threads"] + 1, (name, t1, t2)
    # the TFLite worker loads LiteRT and numpy only: no torch in its memory
    assert rows["tflite/int8.tflite"]["threads"]["1"]["peak_rss_mib"] < 200
    assert "tflite/int8.tflite: 1 thread(s) " in capsys.readouterr().out
    # a TFLite file's memory, split by where it sits (test_memory.py checks the parts); none for ONNX
    for name in ("tflite/int8.tflite", "tflite/fp32.tflite"):
        memory = rows[name]["threads"]["2"]["memory"]
        size = (run / name).stat().st_size / 2**20
        assert memory["mode"] == "interpreter" and memory["file_mib"] == pytest.approx(size, rel=0.05, abs=0.05)
        assert memory["floor_mib"] == pytest.approx(size, rel=0.1) and memory["model_mib"] > memory["floor_mib"]
    assert "memory" not in rows["onnx/model.onnx"]["threads"]["1"]
    # and as the device bundle runs it: CompiledModel with the weight cache, at the largest thread count, from a copy
    shipped = rows["tflite/int8.tflite"]["shipped"]
    assert shipped["mode"] == "compiled_cache" and list(shipped["threads"]) == ["2"]
    ship = shipped["threads"]["2"]["memory"]
    assert ship["mode"] == "compiled_cache" and ship["cache_mib"] > 0 and ship["cache_file_mib"] > 0
    assert not list((run / "tflite").glob("*.xnnpack_cache")) and "shipped" not in rows["onnx/model.onnx"]
    assert main(["report", str(run)]) == 0
    md = (run / "report" / "report.md").read_text()
    section = md.split("## Memory (model MiB, measured)")[1].split("\n## ")[0]
    int8 = rows["tflite/int8.tflite"]["threads"]
    top = max((c["memory"] for c in int8.values()), key=lambda m: m["model_mib"])
    assert (
        f"| tflite/int8.tflite | CompiledModel + weight cache, as shipped | {ship['model_mib']:.1f} | "
        f"{ship['file_mib']:.1f} |"
    ) in section
    assert f"| tflite/int8.tflite | Interpreter | {top['model_mib']:.1f} | {top['file_mib']:.1f} |" in section
    assert "onnx/model.onnx" not in section and (run / "report" / "memory.png").stat().st_size > 10_000
    row = next(
        r
        for r in json.loads((run / "report" / "report.json").read_text())["rows"]
        if r["artifact"] == "tflite/int8.tflite"
    )
    assert row["model_mib"] == ship["model_mib"] and row["interpreter_model_mib"] == top["model_mib"]
    assert row["memory_mode"] == "compiled_cache"
    if row["status"] == "pass":  # the only int8 file with a latency: recommended, quoting its memory as shipped
        assert md.splitlines()[2].startswith("Recommended phone file: tflite/int8.tflite (")
        assert (
            f"{ship['model_mib']:.1f} MiB in memory (CompiledModel + weight cache, as shipped; "
            f"{top['model_mib']:.1f} MiB with the Interpreter))"
        ) in md.splitlines()[2]


def test_broken_artifact_becomes_a_result_not_a_crash(tmp_path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"not a flatbuffer")
    result = benchmark([bad], [1, 1, 28, 28], threads=[1], warmup=1, runs=2)[0]
    assert "LiteRT cannot load it" in result["threads"]["1"]["error"]


def test_benchmark_error_is_a_bench_failed_row(tiny_run, tmp_path, capsys):
    """A file damaged while it was benchmarked (after it was built and gated): its benchmark fails, and the report
    says so with the reason; while the damaged file is on disk its row is stale (its record describes another file)."""
    from conftest import copy_run

    from pipeline.core import records
    from pipeline.core.layout import Layout

    cfg = copy_run(tiny_run, tmp_path, "damaged")
    fp16 = cfg.run_dir / "tflite" / "fp16.tflite"
    good = fp16.read_bytes()
    fp16.write_bytes(good[:4096])
    assert (
        main(["benchmark", str(fp16), str(cfg.run_dir / "tflite" / "int8.tflite"), "bench_runs=2", "bench_threads=1"])
        == 2
    )
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: benchmark failed: tflite/fp16.tflite: ")
    assert records.row_status(Layout(cfg.run_dir), "tflite/fp16.tflite", 0)[0] == "stale"
    fp16.write_bytes(good)  # the file as built: the failed benchmark is what is left to show
    assert main(["report", str(cfg.run_dir)]) == 0
    rows = {r["artifact"]: r for r in json.loads((cfg.run_dir / "report" / "report.json").read_text())["rows"]}
    assert rows["tflite/fp16.tflite"]["status"] == "bench failed"
    assert "1 thread(s): " in rows["tflite/fp16.tflite"]["reason"] and "LiteRT" in rows["tflite/fp16.tflite"]["reason"]
    assert rows["tflite/int8.tflite"]["status"] == "pass" and rows["tflite/int8.tflite"]["ms_1"] > 0
    assert "- tflite/fp16.tflite: bench failed: " in (cfg.run_dir / "report" / "report.md").read_text()


def test_latency_bench_reads_the_run_and_writes_beside_it(tiny_run, tmp_path, monkeypatch, capsys):
    """bench/latency.py re-exports the run's weights at another input size through every runtime, into
    runs/<name>-latency/, never into the run; the run's report shows its table."""
    from conftest import copy_run

    tiny_run = copy_run(tiny_run, tmp_path, tiny_run.name)  # the session's run stays as it is: the bench writes beside
    run = tiny_run.run_dir
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    latency = bench_script(monkeypatch, "latency")  # its main() in this process, as `python bench/latency.py` runs it
    assert (
        latency.main(
            [
                f"runs_dir={run.parent}",
                f"name={run.name}",
                "size=56",
                "bench_runs=3",
                "bench_warmup=1",
                "bench_threads=1",
                "calib=8",
                "mobilenet=false",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing in the run changed
    out = run.parent / f"{run.name}-latency"
    table = json.loads((out / "latency_56.json").read_text())
    assert table["runs"] == 3 and table["warmup"] == 1
    rows = {(r["runtime"], r["precision"]): r for r in table["rows"]}
    assert set(rows) == {
        ("torch", "fp32"),
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
        ("tflite", "fp32"),
        ("tflite", "fp16"),
        ("tflite", "dynamic_range"),
        ("tflite", "int8"),
        ("tflite (litert-torch)", "fp32"),
        ("tflite (litert-torch)", "NNCF int8"),
    }
    assert all(r["ms_1"] > 0 and r["errors"] is None for r in rows.values())
    assert rows[("tflite", "int8")]["size_mib"] < 0.3 * rows[("tflite", "fp32")]["size_mib"]
    from ai_edge_litert.interpreter import Interpreter

    shape = Interpreter(model_path=str(out / "56px" / "model_int8.tflite")).get_input_details()[0]["shape"]
    assert shape.tolist() == [1, 56, 56, 1]  # the 28 px run's weights, at 56 px
    assert "| resnet18 | tflite | int8 |" in stdout
    from pipeline.chain import context
    from pipeline.stages.report import report

    written = report(context(tiny_run))
    md = written["md"].read_text()
    assert "## Latency at 56x56 (bench/latency.py)" in md and "| resnet18 | onnxruntime | int8 |" in md
    # each run row the bench re-made carries its 56 px figures, as columns and in the top-1-vs-latency plot
    report_rows = {r["artifact"]: r for r in json.loads(written["json"].read_text())["rows"]}
    int8_56 = report_rows["tflite/int8.tflite"]["at_size"]["56"]
    assert int8_56["ms_1"] == rows[("tflite", "int8")]["ms_1"]
    assert report_rows["quant/ptq_int8.onnx"]["at_size"]["56"]["ms_1"] == rows[("onnxruntime", "int8")]["ms_1"]
    assert (
        report_rows["tflite/nncf_int8.tflite"]["at_size"]["56"]["ms_1"]
        == rows[("tflite (litert-torch)", "NNCF int8")]["ms_1"]
    )
    assert "| ms @1 at 56px | x fp32 TFLite at 56px |" in md and "report/latency.png" in md
    assert written["latency"].read_bytes()[:4] == b"\x89PNG"


def test_compression_bench_runs_beside_the_run_with_the_real_gate(tiny_run, tmp_path, monkeypatch, capsys):
    """bench/compression.py: each variant a run of its own under runs/<name>-compression/, at the run's own gate."""
    from conftest import copy_run

    run = copy_run(tiny_run, tmp_path, tiny_run.name).run_dir  # the session's run stays as it is
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    compression = bench_script(monkeypatch, "compression")  # in this process, as `python bench/compression.py`
    assert (
        compression.main(
            [
                f"runs_dir={run.parent}",
                f"name={run.name}",
                "variants=magnitude30,structured30",
                "prune_epochs=0",
                "structured_epochs=0",
                "quant_fallback=off",
                "run_litert=false",
                "size=56",
                "bench_threads=1",
                "bench_runs=3",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing in the run changed
    table = json.loads((run.parent / f"{run.name}-compression" / "compression.json").read_text())
    assert table["max_int8_drop"] == 1.0  # the run's gate, not a loosened one
    rows = {(r["variant"], r["artifact"]): r for r in table["rows"]}
    assert set(rows) == {
        ("run", "onnx/model.onnx"),
        ("run", "tflite/fp32.tflite"),
        ("run", "tflite/int8.tflite"),
        ("magnitude30", "tflite/pruned30_fp32.tflite"),
        ("magnitude30", "tflite/pruned30_int8.tflite"),
        ("structured30", "tflite/structured30_fp32.tflite"),
        ("structured30", "tflite/structured30_int8.tflite"),
    }
    int8 = rows[("magnitude30", "tflite/pruned30_int8.tflite")]
    variant = run.parent / f"{run.name}-compression" / "magnitude30"
    made = json.loads((variant / "results" / "tflite" / "pruned30_int8.tflite.json").read_text())
    gate = next(g for g in made["gates"] if g["name"] == "top-1 drop")  # what the variant's own record was gated at
    assert gate["threshold"] == 1.0 and int8["drop_points"] == pytest.approx(gate["value"])
    assert int8["status"] == ("pass" if gate["passed"] else "gate") and abs(int8["sparsity"] - 0.3) < 0.02
    assert (run.parent / f"{run.name}-compression" / "magnitude30" / "tflite" / "pruned30_int8.tflite").is_file()
    assert "| magnitude30 | tflite/pruned30_int8.tflite | nncf_magnitude |" in stdout
    # at 56 px: the dense fp32 and int8 files and the channel-pruned int8 file, benchmarked together
    timed = {k for k, r in rows.items() if r.get("ms_56_1")}
    assert timed == {
        ("run", "tflite/fp32.tflite"),
        ("run", "tflite/int8.tflite"),
        ("structured30", "tflite/structured30_int8.tflite"),
    }
    fp32 = rows[("run", "tflite/fp32.tflite")]["ms_56_1"]
    assert all(rows[k]["x_fp32_56"] == pytest.approx(fp32 / rows[k]["ms_56_1"]) for k in timed)
    s30 = rows[("structured30", "tflite/structured30_int8.tflite")]
    assert 0.6 < s30["channels_kept"] < 0.8 and s30["macs"] < rows[("run", "tflite/int8.tflite")]["macs"]
    from ai_edge_litert.interpreter import Interpreter

    made = run.parent / f"{run.name}-compression" / "56px" / "structured30_structured30_int8.tflite"
    assert Interpreter(model_path=str(made)).get_input_details()[0]["shape"].tolist() == [1, 56, 56, 1]
