"""device_tests/: the board script in a venv holding only numpy and ai-edge-litert, run on a bundle the pipeline made;
the Android script against a stand-in adb that replays real benchmark_model output."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import locked

ROOT = Path(__file__).resolve().parents[1]
ANDROID = ROOT / "device_tests" / "android_benchmark.py"


# --- the board script -------------------------------------------------------------------------------------------------


def board_copy(device_bundle, tmp_path) -> Path:
    """The bundle as a user unpacks it: the script writes weight caches beside the models, never into the fixture."""
    return Path(shutil.copytree(device_bundle, tmp_path / "bundle"))


def _differing_prefix(tiny_run) -> int:
    """The smallest image count (a multiple of 50, at least 300) on which the int8 and fp32 files score a different
    top-1, so that a bundle holding one model's figure for both would show."""
    from pipeline.data import eval_arrays, load_data_for
    from pipeline.engine.evaluate import predict
    from pipeline.engine.runners import open_runner

    x, labels = eval_arrays(load_data_for(tiny_run), tiny_run.image_size, 1000)
    right = {
        v: predict(open_runner(tiny_run.run_dir / "tflite" / f"{v}.tflite"), x).argmax(1) == labels
        for v in ("fp32", "int8")
    }
    counts = {v: np.cumsum(r) for v, r in right.items()}
    return next(n for n in range(300, 1001, 50) if counts["fp32"][n - 1] != counts["int8"][n - 1])


@pytest.fixture(scope="session")
def device_bundle(tiny_run, tmp_path_factory):
    from conftest import copy_run

    from pipeline.run import run_one

    images = _differing_prefix(tiny_run)
    cfg = copy_run(
        tiny_run, tmp_path_factory.mktemp("bundle"), "bundled", bundle_models="fp32,int8", bundle_images=images
    )
    run_one("bundle", cfg)
    return cfg.run_dir / "device_bundle"


def test_bundle_holds_models_images_scripts_and_host_figures(device_bundle, tiny_run):
    from pipeline.data import eval_arrays, load_data_for
    from pipeline.engine.evaluate import predict, score
    from pipeline.engine.runners import open_runner

    assert sorted(p.name for p in (device_bundle / "models").iterdir()) == ["fp32.tflite", "int8.tflite"]
    data = np.load(device_bundle / "eval.npz")
    n = len(data["labels"])
    x, labels = eval_arrays(load_data_for(tiny_run), tiny_run.image_size, n)
    assert data["x"].shape == (n, 28, 28, 1) and data["x"].dtype == np.float32
    np.testing.assert_array_equal(data["x"], x.transpose(0, 2, 3, 1))  # exactly what the host feeds, NHWC
    np.testing.assert_array_equal(data["labels"], labels)
    assert data["mean"].tolist() == pytest.approx([0.2860]) and data["std"].tolist() == pytest.approx([0.3530])
    expected = json.loads((device_bundle / "expected.json").read_text())
    assert expected["images"] == n and expected["precision"] == {"fp32.tflite": "fp32", "int8.tflite": "int8"}
    for name in ("fp32.tflite", "int8.tflite"):  # each model's own top-1 on these images, computed here anew
        own = score(predict(open_runner(tiny_run.run_dir / "tflite" / name), x), labels)["top1"]
        assert expected["top1"][name] == own
    assert expected["top1"]["fp32.tflite"] != expected["top1"]["int8.tflite"]  # so a mix-up would show
    readme = (device_bundle / "README.md").read_text()
    assert "bench_tflite.py models/fp32.tflite models/int8.tflite --eval eval.npz" in readme
    assert f"--runs {tiny_run.bench_runs} --warmup {tiny_run.bench_warmup}" in readme
    assert "android_benchmark.py models/int8.tflite --binary" in readme
    from pipeline.stages.bundle import SCRIPT_NAMES

    assert set(SCRIPT_NAMES) == {p.name for p in (ROOT / "device_tests").glob("*.py")} - {
        "arm64_check.py",
        "arm64_fit.py",
        "arm64_rootfs.py",
    }
    for script in SCRIPT_NAMES:
        assert (device_bundle / script).read_bytes() == (ROOT / "device_tests" / script).read_bytes()


def test_bundle_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    from conftest import copy_run

    from pipeline.cli import main

    tiny_run = copy_run(tiny_run, tmp_path, "copy")  # a verb's keys are saved into the run's config: not the session's
    assert main(["bundle", str(tiny_run.run_dir), "bundle_models=resnet*"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err.startswith(
            "error: bundle failed: bundle_models=resnet*: no built .tflite file that passed its gates matches"
        )
        and "the run declares: " in err
    )
    assert main(["bundle", str(tiny_run.run_dir.parent / "nowhere")]) == 2
    assert "not a run directory (no config.yaml)" in capsys.readouterr().err


def test_board_script_in_bare_venv_matches_host_accuracy(litert_venv, device_bundle, tiny_run, tmp_path):
    from pipeline.chain import context
    from pipeline.config import open_run
    from pipeline.data import eval_arrays, load_data_for
    from pipeline.engine.evaluate import predict, score
    from pipeline.engine.runners import open_runner
    from pipeline.stages.report import run_rows

    bare = subprocess.run([str(litert_venv), "-c", "import torch"], capture_output=True)
    assert bare.returncode != 0  # nothing but numpy and the runtime
    assert subprocess.run([str(litert_venv), "-c", "import tensorflow"], capture_output=True).returncode != 0

    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer" * 64)
    out = tmp_path / "device_results_board.json"
    board = board_copy(device_bundle, tmp_path)
    proc = subprocess.run(
        [
            str(litert_venv),
            "bench_tflite.py",
            "models/int8.tflite",
            "models/fp32.tflite",
            str(tmp_path / "bad.tflite"),
            "--eval",
            "eval.npz",
            "--threads",
            "1,2",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--out",
            str(out),
            "--predictions",
        ],
        cwd=board,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr  # the corrupt file fails; the others are kept
    assert "error: " in proc.stderr and "bad.tflite: not a TFLite flatbuffer (no TFL3 identifier)" in proc.stderr
    result = json.loads(out.read_text())
    assert result["runtime"] == "ai_edge_litert.interpreter" and result["runtime_version"] == locked("ai-edge-litert")
    rows = {r["artifact"]: r for r in result["rows"]}
    bundle_labels = np.load(device_bundle / "eval.npz")["labels"]
    for name in ("int8.tflite", "fp32.tflite"):  # --predictions: every image's class, the top-1 they add up to
        pred = np.asarray(rows[name]["predictions"])
        assert len(pred) == len(bundle_labels) and (pred == bundle_labels).mean() == rows[name]["top1"]
        assert "predictions" not in rows[name]["per_thread"]["t1"]
    assert rows["bad.tflite"]["status"] == "failed"

    n = len(np.load(device_bundle / "eval.npz")["labels"])
    x, labels = eval_arrays(load_data_for(tiny_run), tiny_run.image_size, n)
    host = [
        score(predict(open_runner(tiny_run.run_dir / "tflite" / name), x), labels)
        for name in ("int8.tflite", "fp32.tflite")
    ]
    for name, host_row in zip(("int8.tflite", "fp32.tflite"), host, strict=True):
        row = rows[name]
        assert row["status"] == "pass" and row["images"] == n
        assert row["top1"] == host_row["top1"]  # same file, same images, same runtime: the same answers
        assert row["matches_host"] is True
        assert 0 < row["per_thread"]["t1"]["latency_ms_min"] <= row["ms_1"] <= row["per_thread"]["t1"]["latency_ms_p90"]
        assert row["ms_n"] > 0 and row["threads_n"] == 2 and row["peak_rss_mib"] > 10
        # memory: by default the packed weights live in a cache file beside the model, mapped, not a private copy
        memory = row["per_thread"]["t1"]["memory"]
        assert row["mode"] == "compiled_cache" and memory["mode"] == "compiled_cache"
        assert (board / "models" / f"{name}.xnnpack_cache").is_file() and memory["cache_mib"] > 0
        assert row["model_mib"] >= memory["model_mib"] > 0 and row["floor_mib"] == pytest.approx(memory["floor_mib"])
        size = (board / "models" / name).stat().st_size / 2**20
        assert memory["floor_mib"] == pytest.approx(size, rel=0.1)  # weights as stored, activations tiny at 28 px
    assert (
        rows["int8.tflite"]["precision"] == "int8" and rows["int8.tflite"]["per_thread"]["t1"]["input_dtype"] == "int8"
    )
    assert rows["bad.tflite"]["precision"] is None  # not a TFLite file: no precision to read
    assert "int8.tflite | int8 | pass" in proc.stdout

    run = device_bundle.parent
    (run / "device").mkdir(exist_ok=True)
    shutil.copy(out, run / "device" / out.name)  # what a user copies back: report merges it as extra rows
    merged = {r["artifact"]: r for r in run_rows(context(open_run(run)))[0]}
    device_row = merged[f"int8.tflite @ device:{result['host']['name']}"]
    assert device_row["top1"] == host[0]["top1"] and device_row["precision"] == "int8"
    # vs its own fp32, in points, signed (+: the int8 file scores higher), rounded to 1e-6 as the report promises
    assert device_row["delta_top1"] == pytest.approx(100 * (host[0]["top1"] - host[1]["top1"]), abs=1e-6)
    assert merged["tflite/int8.tflite"]["source"] == "host"


def test_board_script_reports_the_same_memory_fields_under_tflite_runtime(
    litert_venv, tflite_runtime_venv, device_bundle, tmp_path
):
    """tflite-runtime has no CompiledModel: auto runs the Interpreter, whose packed weights are a private copy; the
    JSON carries the same fields, and the Interpreter under ai-edge-litert measures alike."""
    rows = {}
    for label, python, mode in (
        ("tflite-runtime", tflite_runtime_venv, "auto"),
        ("litert", litert_venv, "interpreter"),
    ):
        board = board_copy(device_bundle, tmp_path / label)
        out = tmp_path / f"{label}.json"
        proc = subprocess.run(
            [
                str(python),
                "bench_tflite.py",
                "models/fp32.tflite",
                "--threads",
                "1",
                "--runs",
                "3",
                "--warmup",
                "1",
                "--mode",
                mode,
                "--out",
                str(out),
            ],
            cwd=board,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        rows[label] = json.loads(out.read_text())["rows"][0]
        assert not list((board / "models").glob("*.xnnpack_cache"))  # no cache without CompiledModel
    old, new = rows["tflite-runtime"], rows["litert"]
    assert old["mode"] == new["mode"] == "interpreter" and set(old) == set(new)
    assert set(old["per_thread"]["t1"]["memory"]) == set(new["per_thread"]["t1"]["memory"])
    for row in (old, new):
        memory = row["per_thread"]["t1"]["memory"]
        assert memory["packed_mib"] >= 0.8 * memory["weights_mib"] and memory["cache_mib"] == 0
    assert old["floor_mib"] == pytest.approx(new["floor_mib"])  # read from the same file


# What ai-edge-litert 2.3.0's CompiledModel printed for every file under qemu-user on arm64 (make device-check-arm64)
COMPILED_MODEL_FAILS = """import ai_edge_litert.compiled_model as cm


def _cannot_load(*args, **kwargs):
    raise RuntimeError("ERROR: [./litert/cc/litert_compiled_model.h:1961]")


cm.CompiledModel.from_file = staticmethod(_cannot_load)
"""


def test_board_script_falls_back_when_compiled_model_cannot_load(litert_venv, device_bundle, tmp_path):
    """A board where CompiledModel cannot load the files (simulated: its loader raises what it raised under qemu):
    the default still measures and scores every model, with the Interpreter, and says so; a mode the user named is
    not replaced."""
    board = board_copy(device_bundle, tmp_path)
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(COMPILED_MODEL_FAILS)
    env = {**os.environ, "PYTHONPATH": str(patch)}
    expected = json.loads((board / "expected.json").read_text())["top1"]

    def bench(*extra):
        out = tmp_path / "out.json"
        out.unlink(missing_ok=True)
        proc = subprocess.run(
            [
                str(litert_venv),
                "bench_tflite.py",
                "models/int8.tflite",
                "models/fp32.tflite",
                "--eval",
                "eval.npz",
                "--threads",
                "1,2",
                "--runs",
                "3",
                "--warmup",
                "1",
                "--out",
                str(out),
                *extra,
            ],
            cwd=board,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return proc, {r["artifact"]: r for r in json.loads(out.read_text())["rows"]}

    proc, rows = bench()
    assert proc.returncode == 0, proc.stderr
    for name in ("int8.tflite", "fp32.tflite"):
        row = rows[name]
        assert row["status"] == "pass" and row["top1"] == expected[name] and row["matches_host"] is True
        assert row["mode"] == "interpreter" and row["per_thread"]["t2"]["mode"] == "interpreter"
        assert row["fallback"].startswith("compiled_cache: models/") and "; compiled: models/" in row["fallback"]
        assert "litert_compiled_model.h:1961" in row["fallback"]
        assert row["model_mib"] > 0 and row["ms_1"] > 0 and row["ms_n"] > 0
        assert f"note: {name}: ran with interpreter (compiled_cache: " in proc.stderr
    assert " | int8 | pass | interpreter | " in proc.stdout

    proc, rows = bench("--mode", "compiled_cache")  # asked for by name: a failure is the row's, not replaced
    assert proc.returncode == 1
    assert all(r["status"] == "failed" and "litert_compiled_model.h:1961" in r["error"] for r in rows.values())
    assert all(r["fallback"] is None for r in rows.values())


def test_board_script_errors_are_one_line(litert_venv, device_bundle, tmp_path):
    script = str(device_bundle / "bench_tflite.py")

    def board(*args, cwd=device_bundle):
        return subprocess.run([str(litert_venv), script, *args], cwd=cwd, capture_output=True, text=True)

    # -S: no site-packages, so no runtime can be found
    proc = subprocess.run([str(litert_venv), "-S", script, "m.tflite"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no TFLite runtime found") and "pip install" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = board("models/int8.tflite", "--eval", "missing.npz")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: missing.npz: eval file not found (the bundle's eval.npz)"
    out = tmp_path / "delegate.json"
    one_quick_run = ["--threads", "1", "--runs", "2"]
    proc = board(
        "models/int8.tflite", *one_quick_run, "--delegate", "/nonexistent/libvx_delegate.so", "--out", str(out)
    )
    assert proc.returncode == 1
    assert "error: /nonexistent/libvx_delegate.so: cannot load the delegate" in proc.stderr
    assert json.loads(out.read_text())["rows"][0]["status"] == "failed"
    # --out in a folder that is not there yet: made before measuring, so the figures are kept
    out = tmp_path / "results" / "x" / "int8.json"
    proc = board(
        "models/int8.tflite",
        *one_quick_run,
        "--warmup",
        "0",
        "--out",
        str(out),
        cwd=board_copy(device_bundle, tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["rows"][0]["status"] == "pass"
    (tmp_path / "a_file").write_text("")  # a folder that cannot be made: refused before anything runs
    proc = board("models/int8.tflite", "--out", str(tmp_path / "a_file" / "o.json"))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --out ")
    assert "cannot make its folder" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# --- the Android script ---------------------------------------------------------------------------------------------


@pytest.fixture
def phone(tmp_path, tiny_run):
    """PATH with the stand-in adb; returns a function running android_benchmark.py in a scenario. The models are
    real .tflite files, one under a misleading name: precision must come from the file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "fake_adb.py"} "$@"\n')
    adb.chmod(0o755)
    (tmp_path / "benchmark_model").write_bytes(b"\x7fELF fake binary")
    for name, source in (("int8.tflite", "int8"), ("structured50_int8.tflite", "fp32")):
        shutil.copyfile(tiny_run.run_dir / "tflite" / f"{source}.tflite", tmp_path / name)
    root = tmp_path / "phone"
    root.mkdir()

    def run(scenario, *extra, models=("int8.tflite",), output="chromeos_cpu_xnnpack.txt", path=True):
        log = tmp_path / "adb.log"
        log.write_text("")
        env = {
            **os.environ,
            "FAKE_ADB_SCENARIO": scenario,
            "FAKE_ADB_ROOT": str(root),
            "FAKE_ADB_LOG": str(log),
            "FAKE_ADB_OUTPUT": output,
            "PATH": f"{bin_dir}:/usr/bin:/bin" if path else "/nonexistent",
        }
        proc = subprocess.run(
            [sys.executable, str(ANDROID), *models, "--binary", "benchmark_model", "--out", "out.json", *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        out = tmp_path / "out.json"
        rows = json.loads(out.read_text())["rows"] if out.is_file() else None
        if out.is_file():
            out.unlink()
        return proc, calls, rows, root

    return run


def test_android_success_parses_timings_and_memory_and_cleans_up(phone):
    proc, calls, rows, root = phone("ok", "--threads", "1", models=("int8.tflite", "structured50_int8.tflite"))
    assert proc.returncode == 0, proc.stderr
    assert [r["artifact"] for r in rows] == ["int8.tflite", "structured50_int8.tflite"]
    row = rows[0]
    assert row["status"] == "pass" and row["source"] == "android:R58M41ABCDE" and row["delegate"] == "xnnpack"
    assert row["ms_1"] == pytest.approx(56.2658)  # Inference (avg), in ms
    assert row["peak_rss_mib"] == pytest.approx(93.2383)  # the periodic-monitoring peak
    bm = row["benchmark_model"]
    assert bm["init_ms"] == pytest.approx(3.337) and bm["first_ms"] == pytest.approx(81.913)
    assert bm["runs"] == 1061 and bm["latency_ms_min"] == pytest.approx(54.669)
    shell = [c for c in calls if c[:3] == ["-s", "R58M41ABCDE", "shell"] and "benchmark_model --graph" in c[3]]
    assert len(shell) == 2
    assert "--num_threads=1" in shell[0][3] and "--use_xnnpack=true" in shell[0][3]
    assert "--report_peak_memory_footprint=true" in shell[0][3] and "--use_gpu=false" in shell[0][3]
    assert ["-s", "R58M41ABCDE", "push", "benchmark_model", "/data/local/tmp/resnet-edge/benchmark_model"] in calls
    assert [r["precision"] for r in rows] == ["int8", "fp32"]  # read from the files, not their names
    # XNNPACK's weight cache by default (as bench_tflite.py), written by benchmark_model beside the model
    assert "--xnnpack_weight_cache_file_path=/data/local/tmp/resnet-edge/int8.tflite.xnnpack_cache" in shell[0][3]
    assert row["weight_cache"] is True
    shell = [c[3] for c in calls if c[2:3] == ["shell"]]
    assert shell[-6:] == [
        "rm -f /data/local/tmp/resnet-edge/benchmark_model",
        "rm -f /data/local/tmp/resnet-edge/int8.tflite",
        "rm -f /data/local/tmp/resnet-edge/int8.tflite.xnnpack_cache",
        "rm -f /data/local/tmp/resnet-edge/structured50_int8.tflite",
        "rm -f /data/local/tmp/resnet-edge/structured50_int8.tflite.xnnpack_cache",
        "rmdir /data/local/tmp/resnet-edge",
    ]  # it made the folder, so it may remove it
    assert not (root / "data" / "local" / "tmp" / "resnet-edge").exists()  # nothing left on the phone


def test_android_weight_cache_off_and_with_the_gpu(phone):
    for extra in (("--no-weight-cache",), ("--use-gpu",)):
        proc, calls, rows, _ = phone("ok", *extra)
        assert proc.returncode == 0, proc.stderr
        shell = [c[3] for c in calls if c[2:3] == ["shell"] and "benchmark_model --graph" in c[3]]
        assert "xnnpack_weight_cache" not in shell[0] and rows[0]["weight_cache"] is False


def test_android_runs_again_without_the_weight_cache_when_it_fails(phone):
    """The default's weight cache crashes benchmark_model (replayed: a real segfault's text): the model runs again
    without it and the row says so; with --weight-cache asked for by name, the crash is the row's."""
    proc, calls, rows, root = phone("cachecrash")
    assert proc.returncode == 0, proc.stderr
    shell = [c[3] for c in calls if c[2:3] == ["shell"] and "benchmark_model --graph" in c[3]]
    assert len(shell) == 2 and "--xnnpack_weight_cache_file_path=" in shell[0]
    assert "xnnpack_weight_cache" not in shell[1]
    row = rows[0]
    assert row["status"] == "pass" and row["weight_cache"] is False and row["error"] is None
    assert row["ms_1"] is None and row["ms_n"] == pytest.approx(56.2658) and "log_tail" not in row
    assert row["fallback"].startswith(
        "with XNNPACK's weight cache: int8.tflite: benchmark_model crashed (Segmentation fault)"
    )
    assert "note: int8.tflite: ran without the weight cache" in proc.stderr
    assert not (root / "data" / "local" / "tmp" / "resnet-edge").exists()  # the cache it wrote is removed too

    proc, calls, rows, _ = phone("cachecrash", "--weight-cache")
    assert proc.returncode == 1 and rows[0]["status"] == "failed" and "Segmentation fault" in rows[0]["error"]
    assert len([c for c in calls if c[2:3] == ["shell"] and "benchmark_model --graph" in c[3]]) == 1


def test_android_leaves_what_it_did_not_bring(phone, tmp_path):
    shared = tmp_path / "phone" / "data" / "local" / "tmp"
    shared.mkdir(parents=True)
    (shared / "someone_elses.bin").write_bytes(b"keep me")
    proc, calls, rows, root = phone("ok", "--remote-dir", "/data/local/tmp")
    assert proc.returncode == 0, proc.stderr
    assert (shared / "someone_elses.bin").read_bytes() == b"keep me"
    assert sorted(p.name for p in shared.iterdir()) == ["someone_elses.bin"]  # its own files gone, the folder kept
    shell = [c[3] for c in calls if c[2:3] == ["shell"]]
    assert not [c for c in shell if c.startswith(("rmdir", "rm -r", "pkill", "mkdir"))]

    (shared / "benchmark_model").write_bytes(b"their own binary")  # a name it would push: refuse, touch nothing
    proc, calls, rows, _ = phone("ok", "--remote-dir", "/data/local/tmp")
    assert proc.returncode == 2 and rows is None
    assert proc.stderr.strip() == (
        "error: --remote-dir /data/local/tmp already holds benchmark_model, which this "
        "script would overwrite and then delete: choose another --remote-dir"
    )
    assert (shared / "benchmark_model").read_bytes() == b"their own binary"
    assert not [c for c in calls if "push" in c or any("rm " in w for w in c)]


def test_android_pinned_multithread_median_and_memory_delta(phone):
    proc, calls, rows, _ = phone(
        "ok", "--threads", "4", "--cpu-mask", "f0", "--use-gpu", "--op-profiling", output="am62_ssd_mobilenet_v2.txt"
    )
    assert proc.returncode == 0, proc.stderr
    row = rows[0]
    assert row["ms_n"] == pytest.approx(1239.807) and row["ms_1"] is None and row["threads_n"] == 4  # median
    assert row["peak_rss_mib"] == pytest.approx(109.832) and row["delegate"] == "gpu"
    assert row["benchmark_model"]["latency_ms_p95"] == pytest.approx(1247.415)
    command = next(c[3] for c in calls if len(c) > 3 and "--graph" in c[3])
    assert command.startswith("echo PID=$$; exec taskset f0 /data/local/tmp/resnet-edge/benchmark_model ")
    assert "--use_gpu=true" in command and "--enable_op_profiling=true" in command


@pytest.mark.parametrize(
    "scenario, extra, message",
    [
        ("nodevice", (), "error: no Android device attached: connect one with USB debugging on"),
        ("twodevices", (), "error: 2 devices attached (R58M41ABCDE, emulator-5554): choose one with --serial"),
        ("unauthorized", (), "error: R58M41ABCDE is unauthorized: accept the USB debugging prompt on the phone"),
        ("ok", ("--serial", "ZZZ"), "error: --serial ZZZ: not attached (adb devices lists: R58M41ABCDE)"),
    ],
)
def test_android_device_problems_are_one_line(phone, scenario, extra, message):
    proc, calls, rows, _ = phone(scenario, *extra)
    assert proc.returncode == 2 and rows is None
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message)
    assert not any("push" in c for c in calls)


def test_android_serial_picks_one_of_two(phone):
    proc, _, rows, _ = phone("twodevices", "--serial", "R58M41ABCDE")
    assert proc.returncode == 0 and rows[0]["status"] == "pass"


def test_android_no_adb(phone):
    proc, _, rows, _ = phone("ok", path=False)
    assert proc.returncode == 2 and rows is None
    assert proc.stderr.strip() == (
        "error: adb not found: install Android platform-tools and put adb on PATH, or pass --adb PATH"
    )


def test_android_crash_keeps_rows_measured(phone, tmp_path):
    shutil.copyfile(tmp_path / "int8.tflite", tmp_path / "crashy_int8.tflite")
    proc, calls, rows, root = phone("crash", models=("int8.tflite", "crashy_int8.tflite"))
    assert proc.returncode == 1
    assert rows[0]["status"] == "pass" and rows[0]["ms_n"] == pytest.approx(56.2658)  # measured before the crash
    assert rows[1]["status"] == "failed" and "benchmark_model crashed (Segmentation fault)" in rows[1]["error"]
    assert "last line 'Segmentation fault'" in rows[1]["error"]
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [f"error: {rows[1]['error']}"]
    assert not (root / "data" / "local" / "tmp" / "resnet-edge").exists()


def test_android_timeout_names_the_fix_and_stops_only_its_process(phone):
    proc, calls, rows, root = phone("timeout", "--timeout", "2", models=("int8.tflite", "structured50_int8.tflite"))
    assert proc.returncode == 1 and len(rows) == 2  # each model timed out; both rows written
    assert "benchmark_model timed out after 2 s: raise --timeout or lower --runs" in rows[0]["error"]
    shell = [c[3] for c in calls if c[2:3] == ["shell"]]
    assert shell.count("kill 4242") == 2 and not [c for c in shell if "pkill" in c]  # by the pid it started
    assert not (root / "data" / "local" / "tmp" / "resnet-edge").exists()


@pytest.mark.parametrize(
    "script, args, message",
    [
        (
            "bench_tflite.py",
            ["{cut}", "--runs", "2", "--warmup", "0", "--threads", "1", "--out", "{tmp}/r.json"],
            "cut.tflite: truncated or corrupt TFLite file",
        ),  # a struct.error traceback before
        (
            "android_benchmark.py",
            ["{cut}", "--binary", "{cut}", "--threads", "0"],
            "--threads 0: expected an integer >= 1",
        ),
        ("android_benchmark.py", ["{cut}", "--binary", "{cut}", "--runs", "0"], "--runs 0: expected an integer >= 1"),
        ("arm64_check.py", ["{tmp}", "--runtimes="], "--runtimes '': name at least one of"),  # "0/0 ok", exit 0 before
        ("latency_table.py", ["--pack", "{tmp}"], "pack.json: no latency pack (No such file or directory)"),
        ("latency_table.py", ["--pack", "{tmp}", "--rounds", "0"], "--rounds 0: expected an integer >= 1"),
    ],
)
def test_device_scripts_turn_bad_input_into_one_error_line(tiny_run, tmp_path, script, args, message):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes((tiny_run.run_dir / "tflite" / "int8.tflite").read_bytes()[:3000])  # a copy cut off mid-way
    argv = [a.format(cut=cut, tmp=tmp_path) for a in args]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "device_tests" / script), *argv], capture_output=True, text=True, timeout=300
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
