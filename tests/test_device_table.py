"""The budget measured on the device: the bundle's latency pack, device_tests/latency_table.py timing it under both
board runtimes (and over the stand-in adb), and `fit latency_table=` searching on what the device measured."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import EdgeError
from pipeline.engine import device_table

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "device_tests" / "latency_table.py"
# the pack at 64 px, 1 thread, three channel levels per group: small enough to time in seconds under each runtime
PACKED = {"budget_size": 64, "budget_threads": 1, "fit_levels": 3, "bundle_table": True, "bundle_models": "int8"}


@pytest.fixture(scope="module")
def packed(tiny_run, tmp_path_factory):
    """A copy of the tiny run bundled with its latency pack: (cfg, the bundle's latency/ folder)."""
    from conftest import copy_run

    from pipeline.run import run_one

    cfg = copy_run(tiny_run, tmp_path_factory.mktemp("packed"), "packed", **PACKED)
    assert run_one("bundle", cfg) == 0
    return cfg, cfg.run_dir / "device_bundle" / "latency"


def time_pack(python, pack: Path, tmp_path: Path, *extra) -> tuple[subprocess.CompletedProcess, Path]:
    """The script as a user runs it, on a copy of the pack (the runtime writes weight caches beside the files)."""
    folder = Path(shutil.copytree(pack, tmp_path / "latency"))
    out = tmp_path / "table.json"
    proc = subprocess.run(
        [str(python), str(SCRIPT), "--pack", str(folder), "--out", str(out), "--rounds", "1", "--runs", "2", *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, out


@pytest.fixture(scope="module")
def tables(packed, litert_venv, tflite_runtime_venv, tmp_path_factory):
    """The pack timed under each board runtime: {runtime: table path}."""
    found = {}
    for runtime, python in (("ai-edge-litert", litert_venv), ("tflite-runtime", tflite_runtime_venv)):
        proc, out = time_pack(python, packed[1], tmp_path_factory.mktemp(runtime))
        assert proc.returncode == 0, proc.stderr[-2000:]
        found[runtime] = out
    return found


def search_space(cfg):
    """The stage's own setup for the search (engine.fit_files.setup), unpacked, with its context and model key."""
    from pipeline.chain import context
    from pipeline.engine.fit_files import setup

    ctx = context(cfg)
    s = setup(ctx)
    return ctx, s.dense, s.example, s.groups, s.grid, s.shapes, s.key


@pytest.mark.parametrize("runtime", ["ai-edge-litert", "tflite-runtime"])
def test_the_device_script_writes_a_table_fit_accepts(packed, tables, runtime):
    """Every entry the search can ask for, timed by the runtime named, in the host table's format; fit's loader
    takes it at the budget's size and thread count and predicts the dense file as its own measured point."""
    from pipeline.engine.fit_search import grid_shapes
    from pipeline.engine.latency_table import FORMAT, entry_key
    from quantization.channels import plan_shapes

    cfg, pack = packed
    readme = (pack.parent / "README.md").read_text()  # the two commands a user with a board or phone runs
    assert "python latency_table.py" in readme and "latency_table.py --adb --binary" in readme
    assert "resnet-edge fit runs/<name> latency_table=latency_table_<where>_<time>.json budget_ms=" in readme
    assert "for 1 thread(s) at 64 px" in readme and (pack.parent / "latency_table.py").is_file()
    data = json.loads(tables[runtime].read_text())
    spec = json.loads((pack / "pack.json").read_text())
    assert data["format"] == FORMAT and set(data["entries"]) == set(spec["entries"])
    assert all(ms > 0 for ms in data["entries"].values())
    who = data["identity"]
    assert (who["size"], who["threads"], who["measured_on"]) == (64, 1, "device")
    assert (
        who["runtime"] == {"ai-edge-litert": "ai-edge-litert 2.3.0", "tflite-runtime": "tflite-runtime 2.14.0"}[runtime]
    )
    assert who["mode"] == ("compiled_cache" if runtime == "ai-edge-litert" else "interpreter")

    _, _, _, groups, grid, shapes, key = search_space(cfg)
    table = device_table.load(tables[runtime], 64, 1, key)
    table.measure(grid_shapes(shapes, groups, grid))  # every entry there: nothing to time on this host
    assert table.measured == 0 and table.source == "device"
    dense, lowest = data["rest"][key]["points"]
    assert dense["ops_ms"] == pytest.approx(sum(data["entries"][entry_key(s)] for s in shapes))
    assert table.predict(key, shapes) == pytest.approx(dense["whole_ms"])
    plan = {g.name: grid[g.name][-1] for g in groups}
    # the host's plan names the same entries the device summed for its fastest-plan file (the line through both
    # points may fall back to the dense point alone when a busy spell contradicts their order: latency_table.line)
    assert table.ops_ms(plan_shapes(shapes, groups, plan)) == pytest.approx(lowest["ops_ms"])


def test_fit_searches_on_the_device_table_and_the_report_shows_the_device_figure(packed, tables, litert_venv, tmp_path):
    """budget_ms between the device's dense file and its fastest plan: a pruned, gated file predicted within the
    budget on that device, the row naming whose table; the file at the budget's size timed by the board script
    (device/*.json) then shows in the report beside the prediction."""
    from conftest import copy_run

    from pipeline.chain import context
    from pipeline.core import records
    from pipeline.run import run_one
    from pipeline.stages.report import report

    cfg, _ = packed
    table = json.loads(tables["tflite-runtime"].read_text())
    dense, lowest = next(iter(table["rest"].values()))["points"]
    budget = round(lowest["whole_ms"] + 0.7 * (dense["whole_ms"] - lowest["whole_ms"]), 4)
    cfg = copy_run(
        cfg,
        tmp_path,
        "onboard",
        latency_table=str(tables["tflite-runtime"]),
        budget_ms=budget,
        fit_steps=2,
        fit_step_images=256,
        structured_epochs=1,
        max_int8_drop=10.0,  # as tests/test_fit.py: the tiny model's gate is not what is tested here
    )
    assert run_one("fit", cfg) == 0
    name = f"fit_{budget:g}ms".replace(".", "p")
    record = json.loads((cfg.run_dir / "fit" / f"{name}.json").read_text())
    assert record["pruned"] and record["device"]["predicted_ms"] <= budget and record["measured_ms"] is None
    assert record["table"]["source"] == "device" and "tflite-runtime 2.14.0" in record["device"]["on"]
    assert not (cfg.run_dir / "fit" / "latency_64px_1thr.json").exists()  # no host table was built
    row = records.read(context(cfg).layout, f"tflite/{name}_int8.tflite")
    assert records.status(row)[0] == "pass" and row["build"]["fit"]["predicted_on"] == record["device"]["on"]

    md = report(context(cfg))["md"].read_text()
    assert f"on the latency table measured on {record['device']['on']}" in md
    assert "not measured on the device yet" in md
    at_size = cfg.run_dir / record["device"]["file"]
    board = Path(
        shutil.copytree(at_size.parent, tmp_path / "board", ignore=lambda d, n: [x for x in n if x != at_size.name])
    )
    out = cfg.run_dir / "device" / "board.json"
    proc = subprocess.run(
        [
            str(litert_venv),
            str(ROOT / "device_tests" / "bench_tflite.py"),
            at_size.name,
            "--threads",
            "1",
            "--runs",
            "5",
            "--out",
            str(out),
        ],
        cwd=board,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    fastest = json.loads(out.read_text())["rows"][0]["per_thread"]["t1"]["latency_ms_min"]
    md = report(context(cfg))["md"].read_text()
    assert f": {fastest:.3f} ms, fastest ({at_size.name}; predicted {record['device']['predicted_ms']:.3f}" in md


def work(key: str) -> int:
    """Multiply-accumulates (a conv) or elements (an add, a pool) of a table entry, from its key."""
    op, *rest = key.split()
    hw, (cin, cout) = int(rest[-2].removesuffix("px")), map(int, rest[-1].split(">"))
    if op != "conv":
        return hw * hw * cout
    kernel, stride = int(rest[0].split("x")[0]), int(rest[0].split("/")[1])
    return (hw // stride) ** 2 * kernel * kernel * cin * cout


def heavy(data: dict, pack: dict, hw: int, ms_per_mac: float) -> dict:
    """Another device's table, made from a measured one: every op at `hw` px costs `ms_per_mac` more per unit of its
    work there (at 64 px a quarter-width model's ops are small enough that a call's fixed cost hides their channel
    count; on this device it does not); the whole files' points follow their entries."""
    other = copy.deepcopy(data)
    other["identity"]["device"] = f"a device slow at {hw} px"
    other["entries"] = {k: v + (ms_per_mac * work(k) if f" {hw}px " in k else 0) for k, v in data["entries"].items()}
    for point, c in zip(next(iter(other["rest"].values()))["points"], pack["calibration"], strict=True):
        point["ops_ms"] = point["whole_ms"] = sum(other["entries"][k] for k in c["keys"])
    return other


def test_another_devices_table_changes_the_search_choice(packed, tables, tmp_path):
    """Two devices whose costs differ by layer: where the 16 px ops (layer1) are dear the search cuts a group that
    shrinks them; where the 2 px ops (layer4) are, one that shrinks those."""
    from pipeline.engine.fit_search import Space, search
    from quantization.channels import plan_shapes

    cfg, pack = packed
    ctx, model, example, groups, grid, shapes, key = search_space(cfg)
    data, spec = json.loads(tables["ai-edge-litert"].read_text()), json.loads((pack / "pack.json").read_text())
    val = (ctx.val_set[0][:500], ctx.val_set[1][:500])
    chosen = {}
    for hw in (16, 2):
        path = tmp_path / f"slow_at_{hw}px.json"
        path.write_text(json.dumps(heavy(data, spec, hw, 1e-4)))
        table = device_table.load(path, 64, 1, key)
        space = Space(
            groups, grid, lambda p, t=table: t.predict(key, plan_shapes(shapes, groups, p)), example, val[0], val
        )
        dense = space.cost({})
        result = search(copy.deepcopy(model), space, 0.9 * dense, None, 1, log=lambda _: None)
        assert result.trace, (result.feasible, result.fastest, dense, result.cost)
        first = result.trace[0]["group"]
        cut = plan_shapes(shapes, groups, {first: result.trace[0]["channels"]})
        chosen[hw] = (first, {a.hw for a, b in zip(shapes, cut, strict=True) if a != b})
    assert chosen[16][0] != chosen[2][0]
    assert 16 in chosen[16][1] and 2 not in chosen[16][1]  # layer1's ops shrink on the device slow at 16 px
    assert 2 in chosen[2][1] and 16 not in chosen[2][1]  # layer4's on the one slow at 2 px


def test_a_table_for_another_size_or_thread_count_is_refused_in_one_line(packed, tables, tmp_path, capsys):
    from conftest import copy_run

    from pipeline.cli import main

    cfg, _ = packed
    path = str(tables["ai-edge-litert"])
    run = copy_run(cfg, tmp_path, "refused")
    for words, message in (
        (["budget_size=96"], "measured at 64 px, 1 thread(s); the budget is at 96 px, 1 thread(s)"),
        (["budget_size=64", "budget_threads=4"], "measured at 64 px, 1 thread(s); the budget is at 64 px, 4 thread(s)"),
        (["budget_threads=1", "fit_levels=5"], "not calibrated for this run's model"),  # another grid than the pack's
    ):
        assert main(["fit", str(run.run_dir), f"latency_table={path}", "budget_ms=1", *words]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
        assert len(err) == 1 and message in err[0] and path in err[0], err
    assert main(["fit", str(run.run_dir), f"latency_table={path}", "budget_speedup=2", "fit_levels=3"]) == 2
    assert "a device's table is for budget_ms" in capsys.readouterr().err
    with pytest.raises(EdgeError, match="not calibrated for this run's model"):
        device_table.load(Path(path), 64, 1, "resnet50 width=1")
    assert not (run.run_dir / "fit" / "latency_64px_1thr.json").exists()  # refused before anything was timed


def test_the_adb_route_times_every_file_with_benchmark_model_and_leaves_the_phone_clean(packed, tmp_path):
    """The stand-in adb replays real benchmark_model output (a Chromebook's XNNPACK run: min 54669 us): each op and
    whole file pushed, timed with the budget's thread count, removed; the table names the phone."""
    _, pack = packed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests" / "fake_adb.py"} "$@"\n')
    (bin_dir / "adb").chmod(0o755)
    (tmp_path / "benchmark_model").write_bytes(b"\x7fELF fake binary")
    phone, log = tmp_path / "phone", tmp_path / "adb.log"
    phone.mkdir()
    env = {
        **os.environ,
        "FAKE_ADB_SCENARIO": "ok",
        "FAKE_ADB_ROOT": str(phone),
        "FAKE_ADB_LOG": str(log),
        "FAKE_ADB_OUTPUT": "chromeos_cpu_xnnpack.txt",
        "PATH": f"{bin_dir}:/usr/bin:/bin",
    }
    out = tmp_path / "phone.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--adb", "--binary", "benchmark_model", "--pack", str(pack), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data, spec = json.loads(out.read_text()), json.loads((pack / "pack.json").read_text())
    assert data["identity"]["device"] == "Pixel 7 (arm64-v8a)" and data["identity"]["runtime"] == "benchmark_model"
    assert set(data["entries"]) == set(spec["entries"]) and set(data["entries"].values()) == {54.669}
    assert [p["whole_ms"] for p in next(iter(data["rest"].values()))["points"]] == [54.669, 54.669]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [c for c in calls if c[:3] == ["-s", "R58M41ABCDE", "shell"] and "--graph=" in c[3]]
    files = len(set(spec["entries"].values())) + len(spec["calibration"])
    assert len(runs) == files and all("--num_threads=1" in c[3] for c in runs)
    pushed = [c[4] for c in calls if c[2:3] == ["push"]]
    assert len(pushed) == files + 1 and len(set(pushed)) == len(pushed)  # the binary, then each file once
    assert not any(phone.rglob("*.*")), list(phone.rglob("*"))  # every file and the folder it made are gone
