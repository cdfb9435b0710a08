"""The second converter: litert-torch from the torch model, fp32 and NNCF PT2E int8, on a copy of the tiny trained
run, at the default gates."""

import json

from conftest import copy_run

from pipeline.core.precision import tflite_ops
from pipeline.run import run_one


def record(cfg, artifact: str) -> dict:
    return json.loads((cfg.run_dir / "results" / f"{artifact}.json").read_text())


def test_litert_fp32_and_nncf_int8(litert_run):
    cfg = litert_run
    fp32 = record(cfg, "tflite/fp32_litert.tflite")
    parity = {g["name"]: g for g in fp32["gates"]}["parity"]
    assert parity["threshold"] == 1e-3 and parity["value"] <= 1e-3 and parity["passed"]
    assert parity["figure"] == "max |dlogit| vs train/best.pt"  # straight from torch, no ONNX in between
    check = fp32["build"]["cross_check"]  # the two fp32 routes, compared on the test split
    assert check["other"] == "tflite/fp32.tflite" and check["agreement"] >= 0.999 and check["max_abs_diff"] < 1e-3
    assert set(check["vs_torch"]) == {"tflite/fp32.tflite", "tflite/fp32_litert.tflite"}

    int8 = record(cfg, "tflite/nncf_int8.tflite")
    assert int8["build"]["precision"] == "int8" and int8["build"]["method"] == "nncf pt2e (minmax) + litert-torch"
    drop = {g["name"]: g for g in int8["gates"]}["top-1 drop"]
    assert drop["threshold"] == 1.0 and drop["value"] <= 1.0 and drop["passed"]
    assert int8["evaluation"]["parent"] == "train/best.pt" and int8["build"]["calibration"]["images"] == 300
    ops = tflite_ops(cfg.run_dir / "tflite" / "nncf_int8.tflite")
    weighted = [o for o in ops if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD")]
    assert sum(o["op"] == "ADD" for o in weighted) == 8  # the eight residual adds of ResNet-18
    float_ops = [o for o in weighted if set(o["inputs"][:2]) != {"INT8"} or o["outputs"] != ["INT8"]]
    assert float_ops == []  # every conv, fully-connected and residual add runs in int8
    assert int8["build"]["size_mib"] < 0.3 * fp32["build"]["size_mib"]


def test_no_cross_check_with_an_onnx2tf_file_its_record_does_not_vouch_for(tiny_run, tmp_path):
    """tflite/fp32.tflite on disk, but its record says the last convert failed: litert compares nothing with it."""
    from pipeline.core import records
    from pipeline.core.layout import Layout

    cfg = copy_run(tiny_run, tmp_path, "stale", run_structured=False, run_magnitude=False)
    assert (cfg.run_dir / "tflite" / "fp32.tflite").is_file()
    assert record(cfg, "tflite/fp32.tflite")["build"]["status"] == "ok"
    records.write(
        Layout(cfg.run_dir),
        "tflite/fp32.tflite",
        build={"status": "failed", "stage": "convert", "error": "onnx2tf failed"},
        evaluation=None,
        gates=None,
        benchmark=None,
    )
    assert run_one("litert", cfg) == 0
    assert "cross_check" not in record(cfg, "tflite/fp32_litert.tflite")["build"]


def test_report_names_the_two_fp32_routes(litert_run, tmp_path):
    from pipeline.cli import main

    cfg = copy_run(litert_run, tmp_path, "routes", run_structured=False, run_magnitude=False)
    assert main(["report", str(cfg.run_dir)]) == 0
    md = (cfg.run_dir / "report" / "report.md").read_text()
    assert "Two fp32 converters: tflite/fp32.tflite (onnx2tf, from ONNX) and tflite/fp32_litert.tflite" in md
    assert ": they agree." in md
    rows = {r["artifact"]: r for r in json.loads((cfg.run_dir / "report" / "report.json").read_text())["rows"]}
    assert rows["tflite/nncf_int8.tflite"]["status"] == "pass" and rows["tflite/fp32_litert.tflite"]["status"] == "pass"
