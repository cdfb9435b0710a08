"""Gates at their real default thresholds on genuinely good and bad artifacts, and artifacts that cannot be built.
The thresholds are written here as numbers, never imported from the code they check."""

import gzip
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.cli import main
from pipeline.data import FASHION_MNIST_DIR


def _idx(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file (gzipped), the Fashion-MNIST format."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_constant_calibration_images_are_refused_before_any_int8_file(tiny_run, tmp_path, capsys):
    """The trained tiny model's weights, but a training split of all-black images: int8 calibrated on them would
    saturate on real images (an earlier version let such files through to fail the int8 gate); now every route that
    calibrates refuses them with one line, and the stages that need no calibration still succeed."""
    data = tmp_path / "black-train"
    data.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes((FASHION_MNIST_DIR / name).read_bytes())
    (data / "train-images-idx3-ubyte.gz").write_bytes(_idx(np.zeros((1000, 28, 28), np.uint8)))
    (data / "train-labels-idx1-ubyte.gz").write_bytes(_idx(np.arange(1000) % 10))
    args = [
        "run",
        f"weights={tiny_run.run_dir / 'train' / 'best.pt'}",
        "epochs=0",
        f"data_root={data}",
        "width=0.25",
        "stem=imagenet",
        "image_size=28",
        "preset=cpu",
        "min_steps=0",
        "eval_subset=1000",
        "run_structured=false",
        "run_magnitude=false",
        "bench_runs=3",
        f"runs_dir={tmp_path}",
        "name=black",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    refusal = "calibration: 300 of 300 calibration images are constant (300 all black)"
    assert err.startswith("error: run failed: ")
    for stage in ("convert", "litert", "quantize"):
        assert f"{stage}: {refusal}" in err
    run = tmp_path / "black"
    rows = {r["artifact"]: r for r in json.loads((run / "report" / "report.json").read_text())["rows"]}
    assert rows["onnx/model.onnx"]["status"] == "pass"  # export needs no calibration
    for rel in ("tflite/int8.tflite", "tflite/nncf_int8.tflite", "quant/ptq_int8.onnx"):
        assert rows[rel]["status"] == "failed" and rows[rel]["reason"].startswith(refusal)
        assert not (run / rel).exists()  # nothing calibrated on black images was written
    assert "| tflite/int8.tflite | - | - | - |" in (run / "report" / "report.md").read_text()


def test_export_parity_gate_fails_when_onnx_and_torch_disagree(tiny_run, tmp_path, capsys):
    """Logits in the millions: float32 rounding alone puts onnxruntime and torch far more than 1e-4 apart."""
    from conftest import copy_run

    good = json.loads((tiny_run.run_dir / "results" / "onnx" / "model.onnx.json").read_text())
    parity = next(g for g in good["gates"] if g["name"] == "parity")
    assert parity["threshold"] == 1e-4 and 0 < parity["value"] <= 1e-4 and parity["passed"]
    cfg = copy_run(tiny_run, tmp_path, "loud")
    best = cfg.run_dir / "train" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    ckpt["model"]["fc.weight"] *= 1e6
    torch.save(ckpt, best)
    (cfg.run_dir / "onnx" / "model.onnx").unlink()
    assert main(["export", f"runs_dir={tmp_path}", "name=loud"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "onnxruntime vs torch max |dlogit| = " in err and "> 0.0001 on 64 test images" in err
    assert not (cfg.run_dir / "onnx" / "model.onnx").exists()  # a failed gate writes no file
    record = json.loads((cfg.run_dir / "results" / "onnx" / "model.onnx.json").read_text())
    assert record["build"]["status"] == "failed" and "max |dlogit|" in record["build"]["error"]


def _lppool_onnx(path, size: int) -> None:
    """LpPool (which onnx2tf cannot convert) then a classifier: a valid model onnxruntime runs."""
    w = np.random.default_rng(0).standard_normal((10, (size // 2) ** 2)).astype(np.float32)
    nodes = [
        helper.make_node("LpPool", ["input"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2], p=2),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "lp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_artifact_that_cannot_be_built_is_a_failed_row_with_its_reason(tiny_run, tmp_path, capsys):
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "lp")
    onnx_path = cfg.run_dir / "onnx" / "model.onnx"
    _lppool_onnx(onnx_path, 28)
    base = [f"runs_dir={tmp_path}", "name=lp"]
    assert main(["evaluate", str(onnx_path)]) == 0  # the model itself runs (onnxruntime)
    assert main(["--verbose", "convert", *base]) == 2
    err = capsys.readouterr().err
    assert "error: convert failed: " in err and "onnx2tf failed" in err and "LpPool" in err
    assert "Traceback" in err and "in convert_tflite" in err  # --verbose: the cause, where it was raised
    assert main(["report", str(cfg.run_dir)]) == 0
    rows = {r["artifact"]: r for r in json.loads((cfg.run_dir / "report" / "report.json").read_text())["rows"]}
    for variant in ("fp32", "fp16", "dynamic_range", "int8"):
        row = rows[f"tflite/{variant}.tflite"]
        assert row["status"] == "failed" and "onnx2tf failed" in row["reason"] and "LpPool" in row["reason"]
        assert row["top1"] is None and row["size_mib"] is None  # the old file on disk is not reported as built
    onnx_row = rows["onnx/model.onnx"]  # reported, and honest: it no longer matches the checkpoint it came from
    assert onnx_row["status"] == "gate" and "parity FAILED: max |dlogit| vs train/best.pt" in onnx_row["reason"]
    assert onnx_row["images"] == 1000 and onnx_row["top1"] is not None
    assert rows["quant/ptq_int8.onnx"]["status"] == "skipped"  # never run in this directory
    assert main(["evaluate", str(cfg.run_dir / "tflite" / "int8.tflite")]) == 2  # the stale file is not that build
    assert "its last build failed" in capsys.readouterr().err
    md = (cfg.run_dir / "report" / "report.md").read_text()
    assert "| tflite/int8.tflite | - | - |" in md and "- tflite/int8.tflite: failed: " in md
    assert "failed = not built (reason given)" in md


def test_a_drop_of_exactly_the_gate_passes_and_one_image_more_fails():
    # 849 then 839 of 1,000 images right is a drop of exactly 1 point; in floats 100 * (0.849 - 0.839) is
    # 1.0000000000000009
    from pathlib import Path

    from pipeline.engine.evaluate import gates_for

    def drop_gate(top1):
        ev = {"reference": "onnx/model.onnx", "reference_top1": 0.849, "top1": top1}
        (gate,) = gates_for(Path("int8.tflite"), "int8", False, None, ev, 1.0)
        return gate

    assert drop_gate(0.839).passed and drop_gate(0.839).value == 1.0
    assert not drop_gate(0.838).passed and "FAILED" in drop_gate(0.838).text()


def test_delta_column_and_gate_agree_at_the_threshold():
    """The report's Δ is minus the gate's drop, rounded the same way: at exactly one point both say one point."""
    from pipeline.engine.evaluate import delta_points, drop_points

    assert 100 * (0.839 - 0.849) != -1.0  # the float rounding the rule removes
    assert delta_points(0.849, 0.839) == -drop_points(0.849, 0.839) == -1.0
    assert delta_points(None, 0.8) is None and delta_points(0.8, None) is None


def test_the_size_gate_fails_the_report_and_keeps_the_file_out_of_the_bundle(tiny_run, tmp_path, capsys):
    """max_size_mib is a gate like the others: `report` writes its table and exits non-zero naming the file, and
    `bundle` does not ship it (it used to ship a file the report had just failed)."""
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "sized")
    size = (cfg.run_dir / "tflite" / "int8.tflite").stat().st_size / 2**20
    tight, loose = f"max_size_mib={size / 2:.4f}", f"max_size_mib={size * 2:.4f}"
    assert main(["report", str(cfg.run_dir), tight]) == 2
    err = capsys.readouterr().err
    assert "tflite/int8.tflite: size FAILED" in err and "report written" in err
    rows = {r["artifact"]: r for r in json.loads((cfg.run_dir / "report" / "report.json").read_text())["rows"]}
    assert rows["tflite/int8.tflite"]["status"] == "gate" and rows["tflite/fp32.tflite"]["status"] == "pass"
    assert main(["bundle", str(cfg.run_dir), tight, "bundle_images=50"]) == 0
    shipped = sorted(p.name for p in (cfg.run_dir / "device_bundle" / "models").iterdir())
    assert "int8.tflite" not in shipped and "fp32.tflite" in shipped
    assert main(["report", str(cfg.run_dir), loose]) == 0
    written = cfg.run_dir / "device_bundle" / "device_results_board_20261205-101500.json"  # a device run, in place
    written.write_text('{"rows": []}')
    capsys.readouterr()
    assert main(["bundle", str(cfg.run_dir), loose, "bundle_images=50"]) == 0
    assert "int8.tflite" in {p.name for p in (cfg.run_dir / "device_bundle" / "models").iterdir()}
    assert written.read_text() == '{"rows": []}'  # re-making the bundle keeps what a device run wrote into it
    assert "kept what a device run wrote into the old bundle: device_results_board_" in capsys.readouterr().err


def test_device_rows_are_gated_on_their_agreement_with_the_host(tiny_run, tmp_path):
    """A device row passes when its top-1 on the bundle's images is within max_int8_drop (1 point) of the host's on
    the same images; 20 points below is a failed gate, not `pass`; a row with no host figure is `unchecked`."""
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "device")
    (cfg.run_dir / "device").mkdir()
    rows = [
        {
            "artifact": "int8.tflite",
            "precision": "int8",
            "format": "tflite",
            "status": "pass",
            "top1": 0.80,
            "host_top1": 0.805,
        },
        {
            "artifact": "fp16.tflite",
            "precision": "fp16",
            "format": "tflite",
            "status": "pass",
            "top1": 0.60,
            "host_top1": 0.80,
        },
        {"artifact": "fp32.tflite", "precision": "fp32", "format": "tflite", "status": "pass", "top1": 0.81},
    ]
    (cfg.run_dir / "device" / "board.json").write_text(json.dumps({"rows": rows}))
    assert main(["report", str(cfg.run_dir)]) == 0
    got = {r["artifact"]: r for r in json.loads((cfg.run_dir / "report" / "report.json").read_text())["rows"]}
    assert got["int8.tflite @ board"]["status"] == "pass"
    assert (
        got["fp16.tflite @ board"]["status"] == "gate"
        and "device vs host FAILED" in got["fp16.tflite @ board"]["reason"]
    )
    assert got["fp32.tflite @ board"]["status"] == "unchecked"
    assert (
        "unchecked = built and measured, but checked against nothing"
        in (cfg.run_dir / "report" / "report.md").read_text()
    )


def test_a_record_with_no_gate_is_unchecked_not_pass():
    from pipeline.core.records import Gate, status

    assert status({"build": {"status": "ok"}})[0] == "unchecked"
    assert status({"build": {"status": "ok"}, "gates": [Gate.at_most("x", "y", 1, 2).to_dict()]})[0] == "pass"


def test_a_side_command_cannot_rewrite_the_run_gates(tiny_run, tmp_path, capsys):
    """`evaluate ARTIFACT max_int8_drop=100` used to rewrite the row's gates (then report showed it pass and bundle
    shipped it while config.yaml still said 1.0): now an error naming the run's gate, the record untouched."""
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "gated")
    int8 = cfg.run_dir / "tflite" / "int8.tflite"
    record = cfg.run_dir / "results" / "tflite" / "int8.tflite.json"
    before = record.read_text()
    assert main(["evaluate", str(int8), "max_int8_drop=100"]) == 2
    err = capsys.readouterr().err
    assert "max_int8_drop=100.0: int8.tflite is a row of" in err and "gated at the run's max_int8_drop=1.0" in err
    assert record.read_text() == before
    assert main(["evaluate", str(int8)]) == 0  # the run's own gates: allowed
    drop = [g for g in json.loads(record.read_text())["gates"] if g["name"] == "top-1 drop"]
    assert drop and drop[0]["threshold"] == 1.0


def test_an_unreadable_record_is_one_line_for_report_and_bundle(tiny_run, tmp_path, capsys):
    """A results/*.json cut off (or not a record): report used to print `report ok` and exit 0, bundle a
    JSONDecodeError traceback. Now both stop in one line naming the file, and the report already there stays."""
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "cut")
    assert main(["report", str(cfg.run_dir)]) == 0
    before = (cfg.run_dir / "report" / "report.md").read_bytes()
    record = cfg.run_dir / "results" / "tflite" / "int8.tflite.json"
    record.write_text(record.read_text()[:100])
    capsys.readouterr()
    for verb in ("report", "bundle"):
        assert main([verb, str(cfg.run_dir)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            len(err) == 1
            and err[0].startswith(f"error: {record}: unreadable record (JSONDecodeError")
            and "delete it and `resnet-edge run name=cut` rebuilds its row" in err[0]
        ), err
    assert (cfg.run_dir / "report" / "report.md").read_bytes() == before
    record.write_text("[1, 2]")
    assert main(["report", str(cfg.run_dir)]) == 2
    assert f"{record}: not a record (a JSON list)" in capsys.readouterr().err


def test_report_delta_is_the_files_top1_less_the_fp32_top1(tiny_run, tmp_path):
    """Each row's Δ top-1 in the report (JSON, table, recommended line) is its own top-1 minus the fp32 model's on the
    same images, in points: positive where the file scores higher. Checked against the records' measured top-1s."""
    from conftest import copy_run

    from pipeline.core import records
    from pipeline.core.layout import Layout

    cfg = copy_run(tiny_run, tmp_path, "delta")
    main(["report", str(cfg.run_dir)])
    report = json.loads((cfg.run_dir / "report" / "report.json").read_text())
    md = (cfg.run_dir / "report" / "report.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| artifact |"))
    column = [c.strip() for c in head.strip("|").split("|")].index("Δ top-1 vs fp32 (points)")
    signs = set()
    for row in (r for r in report["rows"] if r["source"] == "host" and r["delta_top1"] is not None):
        ev = records.read(Layout(cfg.run_dir), row["artifact"])["evaluation"]
        expected = 100 * (ev["top1"] - ev["reference_top1"])
        assert row["delta_top1"] == pytest.approx(expected, abs=1e-6), row["artifact"]
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {row['artifact']} |"))
        assert [c.strip() for c in line.strip("|").split("|")][column] == f"{expected:.2f}", row["artifact"]
        signs.add((expected > 0) - (expected < 0))
        if f"Recommended phone file: {row['artifact']} (" in md:
            assert f"Δ {expected:+.2f} points vs fp32" in md.split(f"Recommended phone file: {row['artifact']} (")[1]
    assert -1 in signs or 1 in signs  # a row that moved: a flipped sign could not pass
