"""A stage is a module and a row: the declaration in its module is all the CLI, the Python API, `run`, the cache and
the report need. docs/architecture.md's "Add a stage" is run here as written."""

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import ROOT, copy_run

from pipeline.cli import main

FAST = {
    "run_litert": False,
    "run_structured": False,
    "run_magnitude": False,
    "bench_runs": 2,
    "bench_warmup": 1,
    "bench_threads": "1",
    "bundle_images": 50,
}


def add_a_stage_section() -> tuple[str, str]:
    """The module and the chain line of docs/architecture.md's "Add a stage"."""
    section = (ROOT / "docs" / "architecture.md").read_text().partition("## Add a stage")[2]
    module, chain_line = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    return module, chain_line.strip()


def help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.chain
def test_a_stage_added_as_the_docs_say_runs_caches_reports_and_is_a_verb(tiny_run, tmp_path, monkeypatch, capsys):
    import pipeline
    from pipeline import chain
    from pipeline.engine.contract import decide
    from pipeline.run import run

    module, chain_line = add_a_stage_section()
    (tmp_path / "toy.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "toy", raising=False)
    import toy

    assert chain_line == "CHAIN = (*CHAIN[:3], toy.STAGE, *CHAIN[3:])  # after convert"
    monkeypatch.setattr(chain, "CHAIN", (*chain.CHAIN[:3], toy.STAGE, *chain.CHAIN[3:]))  # the one line
    cfg = copy_run(tiny_run, tmp_path / "runs", "toy", **FAST)
    run_dir = cfg.run_dir

    # run: it runs after convert, its record is a row that passes, and it is in the stage table and the report
    run(cfg)
    err = capsys.readouterr().err
    assert re.search(r"^toy ok [\d.]+ s -> toy/model.onnx \([\d.]+ MiB, top-1 [\d.]+%\)$", err, re.M), err
    assert "| toy | ok |" in err
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert list(manifest["stages"])[:4] == ["train", "export", "convert", "toy"]
    assert manifest["artifacts"]["toy/model.onnx"]["stage"] == "toy"
    record = json.loads((run_dir / "results" / "toy" / "model.onnx.json").read_text())
    assert record["build"]["status"] == "ok" and record["gates"] and all(g["passed"] for g in record["gates"])
    assert record["evaluation"]["top1"] == record["evaluation"]["reference_top1"]  # a copy scores as its original
    assert set(record["benchmark"]["threads"]) == {"1"}  # benchmarked like every row
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert [r["status"] for r in report["rows"] if r["artifact"] == "toy/model.onnx"] == ["pass"]
    assert "| toy | ok |" in "\n".join(report["stages"])
    assert "| toy/model.onnx |" in (run_dir / "report" / "report.md").read_text()

    # cached: unchanged the next time; force=true would run it again (the whole chain forced: tests/test_run.py)
    run(cfg)
    assert "toy unchanged, skipped" in capsys.readouterr().err
    assert decide(toy.STAGE, chain.context(cfg))[0] == "cached"
    assert decide(toy.STAGE, chain.context(cfg), force=True)[0] == "run"
    stamp = (run_dir / "toy" / "model.onnx").stat().st_mtime_ns

    # a CLI verb with its help, and a Python verb
    assert "a copy of the ONNX model, evaluated and gated" in help_of(["--help"], capsys)
    assert "eval_subset" in help_of(["toy", "--help"], capsys)
    assert main(["toy", str(run_dir)]) == 0  # the verb makes it again
    assert re.search(r"^toy ok .* -> toy/model.onnx", capsys.readouterr().err, re.M)
    assert (run_dir / "toy" / "model.onnx").stat().st_mtime_ns != stamp
    assert pipeline.toy.__doc__ == "Run the toy stage of cfg's run: a copy of the ONNX model, evaluated and gated."
    assert pipeline.toy(cfg) == 0


def test_every_stage_of_the_chain_is_a_cli_verb_and_a_python_verb(tmp_path, monkeypatch, capsys):
    """Each stage's verb reaches that stage, from the CLI (`resnet-edge <stage> key=value`, or RUN_DIR) and from
    Python (`pipeline.<stage>(cfg)`), its help in `resnet-edge --help`."""
    import pipeline
    import pipeline.run
    from pipeline.chain import CHAIN
    from pipeline.config import load_config, save_config

    called = []
    monkeypatch.setattr(pipeline.run, "run_one", lambda name, cfg: called.append((name, cfg.name)) or 0)
    cfg = load_config(None, {"runs_dir": str(tmp_path), "name": "verbs"})
    save_config(cfg, cfg.run_dir / "config.yaml")
    listing = help_of(["--help"], capsys)
    for stage in CHAIN:
        assert re.search(rf"^\s+{stage.name}\s+{re.escape(stage.help[:30])}", listing, re.M), stage.name
        assert main([stage.name, f"runs_dir={tmp_path}", "name=verbs"]) == 0
        assert main([stage.name, str(cfg.run_dir)]) == 0
        assert getattr(pipeline, stage.name)(cfg) == 0 and getattr(pipeline, stage.name).__name__ == stage.name
        assert called[-3:] == [(stage.name, "verbs")] * 3, stage.name
    assert "run_litert=false" in help_of(["run", "--help"], capsys)  # run's switches, from the declarations
    assert {s.switch for s in CHAIN if s.switch} == {"run_litert", "run_structured", "run_magnitude"}


def test_a_stage_that_reads_a_run_needs_one(tmp_path, capsys):
    """report, bundle, benchmark and explain read a run they did not make: on a folder with no run, one line."""
    from pipeline.chain import CHAIN

    readers = [s.name for s in CHAIN if s.needs_run]
    assert readers == ["explain", "benchmark", "report", "bundle"]
    for name in readers:
        assert main([name, f"runs_dir={tmp_path}", "name=none"]) == 2
        assert capsys.readouterr().err == (
            f"error: {Path(tmp_path) / 'none'}: not a run directory (no config.yaml); run `resnet-edge run` first\n"
        )
