"""resnet-edge compare: several runs, one table, two Pareto plots; runs measured differently are refused."""

import json

from conftest import copy_run

from pipeline.cli import main


def test_compare_merges_two_runs_into_one_table_and_plots(tiny_run, tmp_path, capsys):
    other = copy_run(tiny_run, tmp_path, "tiny_b")
    out = tmp_path / "cmp"
    assert main(["compare", str(tiny_run.run_dir), str(other.run_dir), "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    by_run = {}
    for r in result["rows"]:
        by_run.setdefault(r["run"], []).append(r["artifact"])
    assert set(by_run) == {"tiny", "tiny_b"} and by_run["tiny"] == by_run["tiny_b"]
    assert {"onnx/model.onnx", "tflite/fp32.tflite", "tflite/int8.tflite"} <= set(by_run["tiny"])
    md = (out / "compare.md").read_text()
    assert md == capsys.readouterr().out
    assert "| tiny | resnet18 | 0.25 | tflite/int8.tflite | int8 |" in md
    assert "| tiny_b | resnet18 | 0.25 | tflite/int8.tflite | int8 |" in md
    # the ship line names an int8 file that passed, or says none did (a 3-epoch model may miss the 1-point gate)
    int8 = next(r for r in result["rows"] if r["run"] == "tiny" and r["artifact"] == "tflite/int8.tflite")
    assert (result["ship"] in ("tiny/int8.tflite", "tiny_b/int8.tflite")) == (int8["status"] == "pass")
    for png in ("size.png", "latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert '<img alt="top-1 vs size" src="data:image/png;base64,' in (out / "compare.html").read_text()


def test_compare_shows_the_memory_each_file_was_measured_to_use(tiny_run, tmp_path, capsys):
    """model MiB: the resident memory a TFLite file added when the benchmark ran it (the report's Memory section), as
    the device bundle runs it (CompiledModel with the weight cache) and with the Interpreter, in its own run's row;
    "-" for the same file in a run that never benchmarked it."""
    measured, unmeasured = (copy_run(tiny_run, tmp_path, name) for name in ("measured", "unmeasured"))
    int8 = measured.run_dir / "tflite" / "int8.tflite"
    assert main(["benchmark", str(int8), "bench_runs=2", "bench_warmup=1", "bench_threads=1"]) == 0
    record = json.loads((measured.run_dir / "results" / "tflite" / "int8.tflite.json").read_text())
    interpreter = record["benchmark"]["threads"]["1"]["memory"]["model_mib"]
    shipped = record["benchmark"]["shipped"]
    assert shipped["mode"] == "compiled_cache" and shipped["threads"]["1"]["memory"]["cache_mib"] > 0
    model_mib = shipped["threads"]["1"]["memory"]["model_mib"]
    assert model_mib > 0 and interpreter > 0
    assert not list(int8.parent.glob("*.xnnpack_cache"))  # the cache was written beside a copy, not into the run
    out = tmp_path / "cmp"
    assert main(["compare", str(measured.run_dir), str(unmeasured.run_dir), "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    columns = [result["columns"].index(c) for c in ("model MiB (as shipped)", "model MiB (Interpreter)")]
    cells = {}
    for line in capsys.readouterr().out.splitlines():
        row = [c.strip() for c in line.strip("|").split("|")]
        if len(row) == len(result["columns"]) and row[3] == "tflite/int8.tflite":
            cells[row[0]] = [row[c] for c in columns]
    assert cells == {"measured": [f"{model_mib:.1f}", f"{interpreter:.1f}"], "unmeasured": ["-", "-"]}
    # the only benchmarked int8 file ships if it passed its gate, and the headline says what it uses in memory
    row = next(r for r in result["rows"] if r["run"] == "measured" and r["artifact"] == "tflite/int8.tflite")
    assert (result["ship"] == "measured/int8.tflite") == (row["status"] == "pass")
    if row["status"] == "pass":
        assert (
            f"{row['size_mib']:.2f} MiB, {model_mib:.1f} MiB in memory (CompiledModel + weight cache, as "
            f"shipped; {interpreter:.1f} MiB with the Interpreter))"
        ) in (out / "compare.md").read_text()


def test_compare_refuses_runs_of_another_image_size_or_data_set(tiny_run, tmp_path, capsys):
    bigger = copy_run(tiny_run, tmp_path, "tiny_32", image_size=32)
    assert main(["compare", str(tiny_run.run_dir), str(bigger.run_dir), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ in image size" in err[0] and "(image size 28)" in err[0]
    cifar = copy_run(tiny_run, tmp_path, "tiny_cifar", data_source="cifar10")
    assert main(["compare", str(tiny_run.run_dir), str(cifar.run_dir), "--out", str(tmp_path / "cmp")]) == 2
    assert "differ in data set" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()  # nothing written for a refused comparison


def _row(run, artifact, precision, delta, ms, fmt="tflite"):
    return {
        "run": run,
        "artifact": artifact,
        "format": fmt,
        "precision": precision,
        "status": "pass",
        "delta_top1": delta,
        "ms_1": ms,
        "size_mib": 1.0,
        "top1": 0.9,
    }


def test_ship_holds_each_run_to_its_own_fp32_and_its_own_gate():
    """An int8 file is measured against its own run's fp32 model (its Δ) under its own run's max_int8_drop: neither
    the best fp32 of all runs nor the loosest gate of all runs."""
    from pipeline.compare import ship

    rows = [
        _row("wide", "onnx/model.onnx", "fp32", 0.0, 2.0, "onnx"),
        _row("wide", "tflite/int8.tflite", "int8", -1.5, 1.0),
        _row("narrow", "onnx/model.onnx", "fp32", 0.0, 1.0, "onnx"),
        _row("narrow", "tflite/int8.tflite", "int8", -0.8, 0.3),
    ]
    assert ship(rows, None, {"wide": 2.0, "narrow": 1.0})["run"] == "narrow"  # fastest, within its own 1 point
    assert ship(rows, None, {"wide": 2.0, "narrow": 0.5})["run"] == "wide"  # narrow's 0.8 is past its own 0.5
    assert ship(rows, None, {"wide": 1.0, "narrow": 0.5}) is None


def test_one_fp32_reference_rule_for_host_device_and_latency_rows():
    from pipeline.stages.report.rows import fp32_reference

    host = [
        {"artifact": "onnx/model.onnx", "format": "onnx", "precision": "fp32"},
        {"artifact": "tflite/fp32_litert.tflite", "format": "tflite", "precision": "fp32"},
        {"artifact": "tflite/fp32.tflite", "format": "tflite", "precision": "fp32"},
        {"artifact": "tflite/structured50_fp32.tflite", "format": "tflite", "precision": "fp32"},
    ]
    assert fp32_reference(host)["artifact"] == "onnx/model.onnx"  # what the gates compare with
    assert fp32_reference(host, "tflite")["artifact"] == "tflite/fp32.tflite"  # what a speed-up is against
    device = [
        {"artifact": "structured50_fp32.tflite", "precision": "fp32"},
        {"artifact": "fp32.tflite", "precision": "fp32"},
    ]
    assert fp32_reference(device)["artifact"] == "fp32.tflite"
    assert fp32_reference(device[:1])["artifact"] == "structured50_fp32.tflite"  # no dense file: the first fp32 one
    latency = [
        {"artifact": "model.onnx", "runtime": "onnxruntime", "precision": "fp32"},
        {"artifact": "mobilenet_v2_fp32.tflite", "runtime": "tflite", "precision": "fp32"},
        {"artifact": "model_fp32.tflite", "runtime": "tflite", "precision": "fp32"},
    ]
    assert fp32_reference(latency, "tflite")["artifact"] == "model_fp32.tflite"
    assert fp32_reference([{"artifact": "int8.tflite", "precision": "int8"}]) is None


def test_plots_label_only_the_front_and_colour_each_run(tmp_path, monkeypatch):
    """compare's plot of four models blurred into one patch of labels: now one colour per run with a legend, crosses
    for failed files, and labels only on the Pareto front."""
    import matplotlib.axes

    from pipeline.stages.report.plots import front_png, front_points

    def point(run, name, x, top1, ok=True):
        return {"x": x, "top1": top1, "label": f"{run}/{name}", "ok": ok, "group": run}

    points = [
        point("a", "int8", 10.0, 0.90),
        point("a", "fp32", 40.0, 0.91),
        point("b", "int8", 2.0, 0.88),
        point("b", "fp32", 8.0, 0.87),
        point("c", "int8", 1.0, 0.95, ok=False),
    ]
    assert [p["label"] for p in front_points(points)] == ["b/int8", "a/int8", "a/fp32"]  # failed c is no front
    labelled, legend = [], []
    real_annotate = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "annotate",
        lambda ax, text, *a, **k: labelled.append(text) or real_annotate(ax, text, *a, **k),
    )
    real_scatter = matplotlib.axes.Axes.scatter
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "scatter",
        lambda ax, *a, **k: legend.append((k["label"], k["color"])) or real_scatter(ax, *a, **k),
    )
    out = front_png(points, tmp_path / "size.png", "MiB", "title", "top-1 (%) at the runs' 28 px")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(labelled) == ["a/fp32", "a/int8", "b/int8"]
    names = dict(legend)
    assert list(names) == ["a", "b", "c (failed a gate)"] and len(set(names.values())) == 3


def test_latency_plot_names_both_image_sizes(tmp_path, monkeypatch):
    """Top-1 measured at the run's 28 px against latency at 224 px: the axes say which size each figure is at."""
    import matplotlib.axes

    from pipeline.stages.report.plots import latency_png

    said = []
    real = matplotlib.axes.Axes.set_ylabel
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_ylabel", lambda ax, text, *a, **k: said.append(text) or real(ax, text, *a, **k)
    )
    rows = [
        {
            "artifact": "tflite/int8.tflite",
            "top1": 0.9,
            "source": "host",
            "status": "pass",
            "at_size": {224: {"ms_1": 3.0}},
        }
    ]
    assert latency_png(rows, tmp_path / "latency.png", 224, None, 28).read_bytes()[:4] == b"\x89PNG"
    assert said == ["top-1 (%) at the run's 28 px"]


def _ship_row(artifact, ms_1, size_mib, status="pass", precision="int8", fmt="tflite", source="host"):
    return {
        "artifact": artifact,
        "ms_1": ms_1,
        "size_mib": size_mib,
        "status": status,
        "precision": precision,
        "format": fmt,
        "source": source,
        "data_id": "d",
        "top1": 0.9,
        "delta_top1": -0.1,
    }


def test_the_recommended_file_is_the_fastest_passing_int8_file_and_fits_answer_with_a_budget():
    """Without a budget: the fastest passing int8 TFLite file at 1 thread, the smaller of two equally fast; never a
    failed, float, ONNX or device row. With one: the file fit returned, where it passed."""
    from pipeline.stages.report.markdown import headline
    from pipeline.stages.report.rows import recommended

    rows = [
        _ship_row("onnx/model.onnx", 9.0, 40.0, precision="fp32", fmt="onnx"),
        _ship_row("tflite/fp32.tflite", 8.0, 40.0, precision="fp32"),
        _ship_row("quant/ptq_int8.onnx", 0.5, 9.0, fmt="onnx"),
        _ship_row("tflite/int8.tflite", 3.0, 10.0),
        _ship_row("tflite/pruned50_int8.tflite", 3.1, 10.0),
        _ship_row("tflite/structured50_int8.tflite", 1.5, 3.0),
        _ship_row("tflite/structured50_nncf_int8.tflite", 1.5, 2.9),
        _ship_row("tflite/structured25_int8.tflite", 1.0, 5.0, status="gate"),
        _ship_row("int8.tflite @ phone", 0.2, 1.0, source="device"),
    ]
    assert recommended(rows)["artifact"] == "tflite/structured50_nncf_int8.tflite"
    assert "Recommended phone file: tflite/structured50_nncf_int8.tflite" in headline(rows, None)
    assert "the fastest int8 TFLite file that passed every gate" in headline(rows, None)
    budget = [*rows, _ship_row("tflite/fit_2ms_int8.tflite", 1.9, 4.0)]
    assert recommended(budget)["artifact"] == "tflite/fit_2ms_int8.tflite"
    assert "within the run's budget (fit)" in headline(budget, None)
    failed_fit = [*rows, _ship_row("tflite/fit_2ms_int8.tflite", 1.9, 4.0, status="gate")]
    assert recommended(failed_fit)["artifact"] == "tflite/structured50_nncf_int8.tflite"
