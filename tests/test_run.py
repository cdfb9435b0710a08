"""The whole chain on a small subset and a quarter-width ResNet-18, at the default gates: killed during convert and
continued, manifest and records, report rows, caching (what reruns when a key or a file changes), failed and
skipped stages."""

import hashlib
import json
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, locked

from pipeline.cli import main

SMALL = [
    "model=resnet18",
    "width=0.25",
    "stem=imagenet",
    "image_size=28",
    "preset=cpu",
    "min_steps=0",
    "batch_size=128",
    "train_subset=6000",
    "epochs=3",
    "lr=0.1",
    "eval_subset=1000",
    "finetune_subset=3000",
    "structured_ratio=0.25",
    "structured_round_to=1",  # 16 channels at quarter width: 25% off is 12, not a multiple of 8
    "structured_epochs=5",
    "structured_lr=0.05",
    "prune_ratio=0.3",
    "prune_epochs=1",
    "qat=true",
    "bench_runs=5",
    "bench_warmup=2",
    "bench_threads=1,2",
    "bundle_table=false",  # fit's latency pack at 224 px: tests/test_device_table.py makes a small one
    "name=small",
]
STAGES = [
    "train",
    "export",
    "convert",
    "litert",
    "quantize",
    "prune_structured",
    "prune_magnitude",
    "explain",
    "benchmark",
    "report",
    "bundle",
]
ROWS = [
    "onnx/model.onnx",
    "tflite/fp32.tflite",
    "tflite/fp16.tflite",
    "tflite/dynamic_range.tflite",
    "tflite/int8.tflite",
    "tflite/fp32_litert.tflite",
    "tflite/nncf_int8.tflite",
    "quant/ptq_int8.onnx",
    "quant/qat_int8.onnx",
    "tflite/qat_fp32.tflite",
    "tflite/qat_int8.tflite",
    "tflite/qat_nncf_int8.tflite",
    "tflite/structured25_fp32.tflite",
    "tflite/structured25_int8.tflite",
    "tflite/structured25_nncf_int8.tflite",
    "tflite/pruned30_fp32.tflite",
    "tflite/pruned30_int8.tflite",
    "tflite/pruned30_nncf_int8.tflite",
]


def _ran(err: str) -> list[str]:
    """The stages that ran (their log line says `<stage> ok`), in order."""
    return [line.split()[0] for line in err.splitlines() if line.split()[1:2] == ["ok"] and line.split()[0] in STAGES]


def _kill_during_convert(args, run, log):
    """Start `resnet-edge run` in its own process and SIGKILL it once the manifest says convert has started."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args], stderr=err, stdout=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            try:
                stages = json.loads((run / "manifest.json").read_text())["stages"]
            except (OSError, json.JSONDecodeError, KeyError):
                stages = {}
            if stages.get("convert", {}).get("status") == "started":
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.1)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]


@pytest.mark.chain
def test_run_killed_then_continued_cached_and_forced(tiny_run, tmp_path, capsys):
    """Trained as the session's tiny run (the same training keys: a copy of it, whose train and export stay cached),
    then the rest of the chain, killed during convert and continued."""
    from conftest import copy_run

    args = ["run", *SMALL, f"runs_dir={tmp_path}"]
    run = copy_run(tiny_run, tmp_path, "small").run_dir
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["stages"] = {k: v for k, v in manifest["stages"].items() if k in ("train", "export")}
    (run / "manifest.json").write_text(json.dumps(manifest))  # convert runs again: killed there
    _kill_during_convert(args, run, tmp_path / "killed.log")
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert [stages[s]["status"] for s in ("train", "export", "convert")] == ["ok", "ok", "started"]

    start = time.perf_counter()
    assert main(args) == 0  # continues from convert, every default gate passes
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "train unchanged, skipped" in err and "export unchanged, skipped" in err
    assert _ran(err) == STAGES[2:]

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["config"]["width"] == 0.25 and manifest["config"]["bench_runs"] == 5
    assert manifest["versions"]["onnx2tf"] == locked("onnx2tf") and manifest["versions"]["nncf"] == locked("nncf")
    assert list(manifest["stages"]) == STAGES and all(s["status"] == "ok" for s in manifest["stages"].values())
    assert sum(manifest["stages"][s]["wall_s"] for s in STAGES[2:]) <= elapsed  # the stages' own clocks
    art = manifest["artifacts"]["tflite/int8.tflite"]
    int8 = run / "tflite" / "int8.tflite"
    assert art["bytes"] == int8.stat().st_size and art["stage"] == "convert"
    assert art["sha256"] == hashlib.sha256(int8.read_bytes()).hexdigest()
    assert manifest["stages"]["convert"]["outputs"]["tflite/int8.tflite"] == art["sha256"]

    report = json.loads((run / "report" / "report.json").read_text())
    rows = {r["artifact"]: r for r in report["rows"]}
    assert list(rows) == ROWS  # one row per declared artifact, keyed by its path in the run
    assert {r["status"] for r in rows.values()} == {"pass"}
    assert all(r["images"] == 1000 and r["ms_1"] > 0 and r["ms_n"] > 0 and r["threads_n"] == 2 for r in rows.values())
    # QAT: the QDQ ONNX and the TFLite file are two rows, two records, different files and figures
    qdq, qat_tfl = rows["quant/qat_int8.onnx"], rows["tflite/qat_int8.tflite"]
    assert (qdq["format"], qat_tfl["format"]) == ("onnx", "tflite") and qdq["size_mib"] > 2 * qat_tfl["size_mib"]
    assert (
        json.loads((run / "results" / "quant" / "qat_int8.onnx.json").read_text())["build"]["sha256"]
        != json.loads((run / "results" / "tflite" / "qat_int8.tflite.json").read_text())["build"]["sha256"]
    )
    # every compressed file is held to the fp32 model's top-1, its fp32 form too (pruning and QAT cost points)
    for rel in ("tflite/qat_fp32.tflite", "tflite/structured25_fp32.tflite", "tflite/pruned30_fp32.tflite"):
        drop = [g for g in rows[rel]["gates"] if g["name"] == "top-1 drop"]
        assert rows[rel]["precision"] == "fp32" and len(drop) == 1 and drop[0]["threshold"] == 1.0, rel
        assert drop[0]["value"] == pytest.approx(-rows[rel]["delta_top1"], abs=1e-6), rel
    assert not [g for g in rows["tflite/fp32.tflite"]["gates"] if g["name"] == "top-1 drop"]  # the reference itself
    assert rows["tflite/structured25_int8.tflite"]["macs"] < 0.7 * rows["tflite/int8.tflite"]["macs"]
    assert rows["tflite/pruned30_int8.tflite"]["sparsity"] > 0.28
    # channel-pruned rows: the share of channels kept, not a weight sparsity near zero
    structured = rows["tflite/structured25_int8.tflite"]
    assert structured["sparsity"] is None and 0.7 < structured["channels_kept"] < 0.8
    assert rows["tflite/int8.tflite"]["channels_kept"] is None
    md = (run / "report" / "report.md").read_text()
    assert "| tflite/int8.tflite | tflite | int8 | - | - |" in md and "| sparsity | channels kept | MMACs |" in md
    assert f"| tflite/structured25_int8.tflite | tflite | int8 | - | {structured['channels_kept']:.2f} |" in md
    # the headline: the fastest and the smallest int8 phone files that passed every gate
    best, small = rows[report["recommended"]], rows[report["smallest"]]
    assert best["status"] == small["status"] == "pass" and best["precision"] == small["precision"] == "int8"
    assert best["ms_1"] == min(r["ms_1"] for r in rows.values() if r["precision"] == "int8" and r["format"] == "tflite")
    assert small["size_mib"] == min(
        r["size_mib"] for r in rows.values() if r["precision"] == "int8" and r["format"] == "tflite"
    )
    assert f"Recommended phone file: {report['recommended']} ({best['size_mib']:.2f} MiB, top-1 " in md
    assert ("Smallest: " in md) == (small is not best)
    assert (run / "report" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    int8_rows = [rel for rel in ROWS if rel.endswith("int8.tflite")]
    explained = sorted(str(p.relative_to(run / "explain")) for p in (run / "explain").rglob("*.tflite.json"))
    assert explained == sorted(f"{rel}.json" for rel in int8_rows)  # every int8 phone file, per layer
    assert md.count("vs tflite/fp32_litert.tflite") == 1 and "tflite/int8.tflite vs tflite/fp32.tflite" in md
    assert "## Per-layer int8 error (explain)" in md and "pruned30_nncf_int8.tflite vs explain/refs/pruned30_fp32" in md
    assert (run / "report" / "layers.png").read_bytes()[:4] == b"\x89PNG"
    bundled = sorted(p.name for p in (run / "device_bundle" / "models").iterdir())
    assert bundled == [
        "fp32.tflite",
        "int8.tflite",
        "nncf_int8.tflite",
        "pruned30_int8.tflite",
        "pruned30_nncf_int8.tflite",
        "qat_int8.tflite",
        "qat_nncf_int8.tflite",
        "structured25_int8.tflite",
        "structured25_nncf_int8.tflite",
    ]

    assert main(args) == 0  # unchanged: every stage skipped
    assert capsys.readouterr().err.count("unchanged, skipped") == len(STAGES)
    assert main([*args, "bench_runs=6"]) == 0
    assert _ran(capsys.readouterr().err) == ["benchmark", "report", "bundle"]
    assert json.loads((run / "results" / "tflite" / "int8.tflite.json").read_text())["benchmark"]["runs"] == 6
    assert main([*args, "bench_runs=6", "max_size_mib=100"]) == 0
    assert _ran(capsys.readouterr().err) == ["report", "bundle"]  # the size gate also picks the bundle's files
    # force=true (every stage again) is proven on the shorter chain of test_changed_file_on_disk_reruns_its_stage


def test_changed_file_on_disk_reruns_its_stage(tiny_run, tmp_path, capsys, monkeypatch):
    """A side command pointed at the run rewrites a record: the report marks the row, and `run` notices the changed
    section and rebuilds it."""
    from conftest import copy_run

    cfg = copy_run(tiny_run, tmp_path, "side")
    int8 = cfg.run_dir / "tflite" / "int8.tflite"
    assert main(["evaluate", str(int8), "eval_subset=200"]) == 0
    record = json.loads((cfg.run_dir / "results" / "tflite" / "int8.tflite.json").read_text())
    assert record["evaluation"]["images"] == 200
    assert main(["report", str(cfg.run_dir)]) == 0
    md = (cfg.run_dir / "report" / "report.md").read_text()
    assert "†" in next(line for line in md.splitlines() if line.startswith("| tflite/int8.tflite"))
    assert "measured on other images than the fp32 reference (1000 test images)" in md
    capsys.readouterr()
    import pipeline.data

    loads = []
    real_load = pipeline.data.load_data
    monkeypatch.setattr(pipeline.data, "load_data", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert (
        main(
            [
                "run",
                str(cfg.run_dir / "config.yaml"),
                "run_structured=false",
                "run_magnitude=false",
                "run_litert=false",
                "bench_runs=3",
            ]
        )
        == 0
    )
    assert len(loads) == 1  # one process, one load of the data, shared by every stage that ran
    err = capsys.readouterr().err
    assert "convert ok" in err and "train unchanged, skipped" in err
    record = json.loads((cfg.run_dir / "results" / "tflite" / "int8.tflite.json").read_text())
    assert record["evaluation"]["images"] == 1000

    fp16 = cfg.run_dir / "tflite" / "fp16.tflite"  # an output itself changed on disk: its stage runs again
    fp16.write_bytes(b"not the file convert wrote")
    assert main(["run", str(cfg.run_dir / "config.yaml")]) == 0
    err = capsys.readouterr().err
    assert _ran(err)[0] == "convert" and "export unchanged, skipped" in err
    assert fp16.stat().st_size > 1000
    # what run would do next, decided without doing it (run executes exactly these decisions): nothing changed, so
    # every stage is cached; force=true runs all of it again
    from pipeline.chain import context, stages_for
    from pipeline.config import load_config
    from pipeline.engine.contract import decide

    ctx = context(load_config(cfg.run_dir / "config.yaml", {}))
    chain = stages_for(ctx.cfg)
    assert [s.name for s in chain] == [s for s in STAGES if s not in ("litert", "prune_structured", "prune_magnitude")]
    assert [decide(s, ctx)[0] for s in chain] == ["cached"] * len(chain)
    assert [decide(s, ctx, force=True)[0] for s in chain] == ["run"] * len(chain)


def test_report_cache_key_sees_device_results_with_a_relative_runs_dir(tmp_path, monkeypatch):
    from pipeline.chain import context, stages
    from pipeline.config import load_config
    from pipeline.engine.contract import stage_key

    monkeypatch.chdir(tmp_path)
    ctx = context(load_config(None, {"runs_dir": "runs", "name": "rel", "preset": "cpu"}))
    (tmp_path / "runs" / "rel" / "device").mkdir(parents=True)
    results = tmp_path / "runs" / "rel" / "device" / "device_results_pi.json"
    results.write_text('{"rows": []}')
    before = stage_key(stages()["report"], ctx)
    results.write_text('{"rows": [{"artifact": "int8.tflite", "top1": 0.9}]}')
    assert stage_key(stages()["report"], ctx) != before  # new device figures re-make the report


def test_failed_stage_skips_its_dependents_and_names_only_the_cause(tmp_path, capsys):
    args = [
        "run",
        "width=0.25",
        "image_size=28",
        "preset=cpu",
        "min_steps=0",
        "train_subset=100",
        "batch_size=128",
        f"runs_dir={tmp_path}",
        "name=few",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    log = tmp_path / "few" / "logs" / "train.log"
    assert errors == [
        "error: run failed: train: 1 processes x batch 128 need at least 128 training images; have 100: "
        f"lower --nproc_per_node or batch_size (tools' output and traceback: {log})"
    ]
    assert "need at least 128 training images" in log.read_text()  # the log it names holds the story
    for stage in ("export", "convert", "litert", "quantize", "benchmark", "bundle"):
        assert f"{stage} skipped (needs train)" in err  # the root cause, not the stage in between
    assert "report ok" in err  # the report still says what happened
    rows = json.loads((tmp_path / "few" / "report" / "report.json").read_text())["rows"]
    assert {r["status"] for r in rows} == {"skipped"}
    assert rows[0]["reason"] == "needs train"


def test_tools_output_goes_to_the_stage_logs_not_the_console(tiny_run):
    """The tiny run's train, export and convert (onnx2tf: TensorFlow, absl and the converter's own chatter) printed
    our lines only: one per stage and one per training epoch; the tools' output is in runs/<name>/logs/<stage>.log."""
    from conftest import TINY_CONSOLE

    lines = [ln for ln in TINY_CONSOLE["ours"].splitlines() if ln.strip()]
    assert TINY_CONSOLE["fd"] == ""  # nothing reached file descriptors 1 and 2 past Python
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epochs) == tiny_run.epochs
    assert [ln.split()[0] for ln in lines if ln not in epochs] == ["trained:", "train", "export", "convert"], lines
    assert [ln.split()[1] for ln in lines if ln.split()[0] in ("train", "export", "convert")] == ["ok"] * 3
    log = (tiny_run.run_dir / "logs" / "convert.log").read_text()
    assert log.startswith("=== convert ") and "Model conversion started" in log  # onnx2tf's own story
    assert "fully_quantize" in log  # TFLite's converter, C++, past Python
