"""The whole chain on a small subset and a quarter-width ResNet-18: manifest, report rows, plot, caching, gates."""

import hashlib
import json

from pipeline.cli import main

SMALL = ["model=resnet18", "width=0.25", "stem=imagenet", "image_size=28", "preset=cpu", "batch_size=128",
         "train_subset=3000", "epochs=3", "lr=0.1", "eval_subset=500", "calib_size=100", "finetune_subset=3000",
         "structured_epochs=3", "structured_lr=0.05", "prune_epochs=0", "bench_runs=5", "max_int8_drop=50", "name=small"]


def test_run_end_to_end_then_cached_then_gated(tmp_path, capsys):
    args = ["run", *SMALL, f"runs_dir={tmp_path}"]
    assert main(args) == 0
    run = tmp_path / "small"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["width"] == 0.25 and manifest["versions"]["onnx2tf"] == "1.28.8"
    assert manifest["host"]["cores"] >= 1
    stages = manifest["stages"]
    assert list(stages) == ["train", "export", "convert", "quantize", "prune_structured", "prune_magnitude",
                            "benchmark", "report", "bundle"]
    assert all(s["status"] == "ok" and s["wall_s"] >= 0 for s in stages.values())
    art = manifest["artifacts"]["tflite/int8.tflite"]
    assert art["bytes"] == (run / "tflite" / "int8.tflite").stat().st_size
    assert art["sha256"] == hashlib.sha256((run / "tflite" / "int8.tflite").read_bytes()).hexdigest()

    report = json.loads((run / "report" / "report.json").read_text())
    rows = {r["artifact"]: r for r in report["rows"]}
    for name in ("fp32.tflite", "fp16.tflite", "dynamic_range.tflite", "int8.tflite", "ptq_int8.onnx",
                 "structured50_int8.tflite", "pruned50_int8.tflite", "model.onnx"):
        assert name in rows, name
    assert rows["int8.tflite"]["status"] == "pass" and rows["int8.tflite"]["ms_1"] > 0
    assert rows["structured50_int8.tflite"]["size_mib"] < rows["int8.tflite"]["size_mib"]
    assert rows["pruned50_int8.tflite"]["sparsity"] > 0.45
    page = (run / "report" / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page and "structured50_int8.tflite" in page
    assert (run / "report" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "| int8.tflite | tflite | int8 |" in (run / "report" / "report.md").read_text()
    bundled = sorted(p.name for p in (run / "device_bundle" / "models").iterdir())
    assert bundled == ["fp32.tflite", "int8.tflite", "pruned50_int8.tflite", "structured50_int8.tflite"]
    assert manifest["artifacts"]["device_bundle/eval.npz"]["stage"] == "bundle"

    capsys.readouterr()
    assert main(args) == 0  # unchanged: every stage skipped
    assert capsys.readouterr().err.count("unchanged, skipped") == 9

    gated = [*args, "max_int8_drop=-100", "run_structured=false", "run_magnitude=false", "max_size_mib=0.2"]
    assert main(gated) == 2
    err = capsys.readouterr().err
    assert "run failed: convert: convert gate failed: dynamic_range.tflite" in err
    assert "threshold -100" in err
    int8_mib = (run / "tflite" / "int8.tflite").stat().st_size / 2**20
    assert "report: size gate failed: " in err and f"int8.tflite: {int8_mib:.2f} MiB > max_size_mib 0.2" in err
    rows = {r["artifact"]: r for r in json.loads((run / "report" / "report.json").read_text())["rows"]}
    assert rows["int8.tflite"]["size_gate"] and rows["fp32.tflite"]["size_gate"] is None  # fp32: the reference
    assert rows["structured50_int8.tflite"]["size_mib"] < 0.2 and rows["structured50_int8.tflite"]["size_gate"] is None
    assert (run / "report" / "report.md").is_file()
    assert json.loads((run / "manifest.json").read_text())["stages"]["convert"]["status"] == "failed"
