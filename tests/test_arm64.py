"""device_tests/arm64_check.py without emulation: the wheel tags, the command lines, the one-line errors for a missing
tool, the comparison and the report's merge of a stored arm64 result (tests/fixtures/arm64-ai-edge-litert.json: real
output of device_tests/arm64_check.py on test_run's small run, under qemu-user, trimmed to its fp32 and int8 rows)."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, script_module

FIXTURE = ROOT / "tests" / "fixtures" / "arm64-ai-edge-litert.json"


@pytest.fixture(scope="module")
def arm64():
    return script_module(ROOT / "device_tests" / "arm64_check.py")


@pytest.fixture(scope="module")
def builds():
    """arm64_rootfs.py: what the check builds once and caches."""
    return script_module(ROOT / "device_tests" / "arm64_rootfs.py")


def test_every_manylinux_tag_from_2_17_to_bookworms_glibc(builds):
    tags = builds.manylinux_tags("aarch64", (2, 36))
    assert tags[0] == "manylinux2014_aarch64" and tags[1] == "manylinux_2_17_aarch64"
    assert tags[-1] == "manylinux_2_36_aarch64" and len(tags) == 1 + 20  # 2_17 ... 2_36, none skipped
    cmd = builds.pip_download_command(["numpy<2", "tflite-runtime"], Path("/w"), "aarch64")
    assert cmd[cmd.index("--python-version") + 1] == "3.11" and "--only-binary=:all:" in cmd
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"] == tags  # tflite-runtime 2.14 is 2_34 only
    assert cmd[-2:] == ["numpy<2", "tflite-runtime"]


def test_command_lines(arm64, builds):
    assert builds.mmdebstrap_command(Path("/c/rootfs"))[:4] == [
        "mmdebstrap",
        "--arch=arm64",
        "--variant=minbase",
        "--include=python3,python3-venv",
    ]
    chroot = builds.chroot_command(Path("/c/rootfs"), ["/opt/x/bin/pip", "install", "numpy<2"], "/tmp/b 1")
    assert chroot[:2] == ["chroot", "/c/rootfs"] and "-i" in chroot  # a clean environment inside
    assert chroot[-1] == "cd '/tmp/b 1' && exec /opt/x/bin/pip install 'numpy<2'"  # quoted for the shell
    assert not any("/sys" in a for a in chroot)  # the host's /sys makes ai-edge-litert crash under qemu
    bench = arm64.bench_command("/opt/x/bin/python", ["models/int8.tflite"], "a.json", 3, 1, 60)
    assert bench[bench.index("--threads") + 1] == "1" and "--predictions" in bench and "eval.npz" in bench


@pytest.mark.parametrize(
    "euid, which, qemu, message",
    [
        (1000, True, True, "needs root"),
        (0, False, True, "apt-get install mmdebstrap"),
        (0, True, False, "apt-get install qemu-user-static"),
    ],
)
def test_a_missing_tool_is_one_line_naming_the_package(
    arm64, monkeypatch, tmp_path, capsys, euid, which, qemu, message
):
    run = tmp_path / "run"
    (run / "device_bundle" / "models").mkdir(parents=True)
    (run / "device_bundle" / "models" / "int8.tflite").write_bytes(b"only its name is read before the tools")
    (run / "device_bundle" / "expected.json").write_text('{"top1": {}}')
    shutil.copy(ROOT / "device_tests" / "bench_tflite.py", run / "device_bundle")
    monkeypatch.setattr(arm64.os, "geteuid", lambda: euid)
    monkeypatch.setattr(arm64.shutil, "which", lambda name: f"/usr/bin/{name}" if which else None)
    monkeypatch.setattr(arm64, "QEMU", "/usr/bin/qemu-aarch64-static" if qemu else str(tmp_path / "no-qemu"))
    if qemu and not Path(arm64.QEMU).is_file():
        monkeypatch.setattr(arm64, "QEMU", __file__)  # stands in for an installed qemu: only its presence is read
    cache = tmp_path / "cache"
    assert arm64.main([str(run), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not cache.exists()  # nothing built, nothing half-built


def test_no_bundle_is_named(arm64, tmp_path, capsys):
    assert arm64.main([str(tmp_path / "nothing")]) == 2
    assert "no device bundle" in capsys.readouterr().err


def test_interrupted_build_leaves_nothing(builds, tmp_path):
    def build(tmp):
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        builds.built_once(tmp_path / "rootfs", build, "test")
    assert list(tmp_path.iterdir()) == []
    builds.built_once(tmp_path / "rootfs", lambda tmp: (tmp / "done").write_text("y"), "test")
    assert (tmp_path / "rootfs" / "done").is_file() and len(list(tmp_path.iterdir())) == 1


def test_comparison_counts_differing_images_and_fails_past_half_a_point(arm64):
    arm = {
        "rows": [
            {
                "artifact": "int8.tflite",
                "status": "pass",
                "top1": 0.900,
                "predictions": [1, 2, 3, 4],
                "mode": "interpreter",
                "fallback": "compiled_cache: cannot load; compiled: cannot load",
            },
            {"artifact": "fp32.tflite", "status": "pass", "top1": 0.894, "predictions": [1, 2, 3, 4]},
            {"artifact": "bad.tflite", "status": "failed", "error": "cannot load", "top1": None},
        ]
    }
    host = {
        "rows": [
            {"artifact": "int8.tflite", "top1": 0.901, "predictions": [1, 2, 3, 5]},
            {"artifact": "fp32.tflite", "top1": 0.9, "predictions": [1, 2, 3, 4]},
        ]
    }
    rows = {
        r["model"]: r
        for r in arm64.compare_rows(arm, host, {"int8.tflite": 0.904, "fp32.tflite": 0.9, "bad.tflite": 0.5})
    }
    assert rows["int8.tflite"]["differ_vs_same_runtime"] == 1 and rows["int8.tflite"]["ok"]  # 0.4 point: ok
    assert rows["fp32.tflite"]["differ_vs_same_runtime"] == 0 and not rows["fp32.tflite"]["ok"]  # 0.6 point
    assert not rows["bad.tflite"]["ok"] and rows["bad.tflite"]["error"] == "cannot load"
    table = arm64.table([{**r, "runtime": "x"} for r in rows.values()])
    assert "NO: cannot load" in table and "| int8.tflite | x | interpreter (fallback) | 90.00 |" in table


def test_report_merges_a_stored_arm64_result_as_emulated_device_rows(arm64, tiny_run, tmp_path):
    from conftest import copy_run

    from pipeline.cli import main
    from pipeline.stages.report.markdown import EMULATED_NOTE
    from pipeline.stages.report.rows import measured as _measured

    stored = json.loads(FIXTURE.read_text())
    assert stored["host"]["machine"] == "aarch64" and stored["runtime"] == "ai_edge_litert.interpreter"
    # ai-edge-litert 2.3.0's CompiledModel could load nothing under qemu: the default fell back to the Interpreter
    assert all(r["mode"] == "interpreter" and "litert_compiled_model.h" in r["fallback"] for r in stored["rows"])
    cfg = copy_run(tiny_run, tmp_path, "arm")
    (cfg.run_dir / "device").mkdir()
    shutil.copy(FIXTURE, cfg.run_dir / "device" / FIXTURE.name)
    assert main(["report", str(cfg.run_dir)]) == 0
    report = json.loads((cfg.run_dir / "report" / "report.json").read_text())
    source = stored["rows"][0]["source"]
    assert source.startswith("arm64 (emulated, ai-edge-litert")
    rows = {r["artifact"]: r for r in report["rows"]}
    for stored_row in stored["rows"]:
        row = rows[f"{stored_row['artifact']} @ {source}"]
        assert row["emulated"] and row["top1"] == stored_row["top1"] and "predictions" not in row
        assert row["mode"] == "interpreter" and row["fallback"] == stored_row["fallback"]  # which way it ran, and why
    md = (cfg.run_dir / "report" / "report.md").read_text()
    assert EMULATED_NOTE in md and "NOT representative" in md
    assert not any(r.get("emulated") for r in _measured(report["rows"], None))  # what the Pareto plots draw
