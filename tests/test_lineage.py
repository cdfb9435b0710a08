"""Lineage: a row describes the file, model and data the run holds now, or it says it is stale and is not shipped."""

import json

import numpy as np
import torch
from PIL import Image

from pipeline.cli import main
from pipeline.core import records
from pipeline.core.layout import Layout

BUILT = {
    "onnx/model.onnx",
    "tflite/fp32.tflite",
    "tflite/fp16.tflite",
    "tflite/dynamic_range.tflite",
    "tflite/int8.tflite",
}  # what the tiny run's train, export and convert made


def _rows(run) -> dict:
    """The report's rows of the files the tiny run built (the later stages' rows are 'skipped': not run)."""
    rows = {r["artifact"]: r for r in json.loads((run / "report" / "report.json").read_text())["rows"]}
    assert {a for a, r in rows.items() if r["status"] != "skipped"} == BUILT
    return {a: rows[a] for a in BUILT}


def test_rows_built_from_an_older_model_are_stale_until_rebuilt(tiny_run, tmp_path, capsys):
    """A retrain (other weights in train/best.pt) makes every row built from the old weights stale, through the
    records' lineage (the int8 file was built from the ONNX file, which was built from best.pt): report exits 2 naming
    it, bundle ships none of them; export then convert make them current again, one step at a time."""
    from conftest import copy_run

    from pipeline.engine.checkpoint import load_checkpoint, save_checkpoint

    cfg = copy_run(tiny_run, tmp_path, "lineage")
    run, layout = cfg.run_dir, Layout(cfg.run_dir)
    assert main(["report", str(run)]) == 0
    assert {r["status"] for r in _rows(run).values()} == {"pass"}

    fp16 = run / "tflite" / "fp16.tflite"  # a file replaced under its record: the record describes another file
    good = fp16.read_bytes()
    fp16.write_bytes((run / "tflite" / "fp32.tflite").read_bytes())
    assert records.row_status(layout, "tflite/fp16.tflite", 0)[:1] == ("stale",)
    assert (
        "tflite/fp16.tflite changed on disk since it was built"
        in records.row_status(layout, "tflite/fp16.tflite", 0)[1]
    )
    fp16.write_bytes(good)
    assert records.row_status(layout, "tflite/fp16.tflite", 0)[0] == "pass"

    ckpt = load_checkpoint(layout.best)  # the retrain: other weights, the same architecture
    torch.manual_seed(1)
    ckpt["model"] = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in ckpt["model"].items()
    }
    save_checkpoint(ckpt, layout.best)
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "row(s) are stale" in err and "built from an older train/best.pt" in err
    rows = _rows(run)
    assert {r["status"] for r in rows.values()} == {"stale"}
    assert "built from an older train/best.pt" in rows["tflite/int8.tflite"]["reason"]  # two records back
    md = (run / "report" / "report.md").read_text()
    assert "- tflite/int8.tflite: stale: built from an older train/best.pt" in md
    assert main(["bundle", str(run), "bundle_images=50"]) == 2
    assert "no built .tflite file that passed its gates" in capsys.readouterr().err

    assert main(["export", str(run / "config.yaml")]) == 0
    assert records.row_status(layout, "onnx/model.onnx", 0)[0] == "pass"
    status, reason = records.row_status(layout, "tflite/int8.tflite", 0)
    assert status == "stale" and "built from an older onnx/model.onnx" in reason
    assert main(["convert", str(run / "config.yaml")]) == 0
    assert main(["report", str(run)]) == 0
    assert {r["status"] for r in _rows(run).values()} == {"pass"}
    assert main(["bundle", str(run), "bundle_images=50"]) == 0
    assert "int8.tflite" in {p.name for p in (run / "device_bundle" / "models").iterdir()}


def test_changed_images_change_the_key_of_every_stage_that_reads_them(tmp_path):
    """An image replaced under an ImageFolder data_root: every stage that reads the data runs again (it used to be
    'unchanged, skipped'); the stages that read only files are untouched. A record built from the old data is stale."""
    from pipeline.chain import context, stages_for
    from pipeline.config import load_config
    from pipeline.engine.contract import stage_key

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png"
                )
    cfg = load_config(
        None,
        {
            "data_source": "imagefolder",
            "data_root": str(tmp_path / "data"),
            "image_size": "16",
            "stem": "small",
            "val_size": "2",
            "calib_size": "2",
            "runs_dir": str(tmp_path / "runs"),
            "name": "d",
        },
    )
    chain = stages_for(cfg)

    def loaded():  # as `run` and every verb that reads the data do: load it at the door
        ctx = context(cfg)
        ctx.data  # noqa: B018
        return ctx

    ctx = loaded()
    before = {s.name: stage_key(s, ctx) for s in chain}
    assert before == {s.name: stage_key(s, loaded()) for s in chain}  # the same images: the same keys

    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "data" / "test" / "b" / "3.png")
    changed = loaded()
    after = {s.name: stage_key(s, changed) for s in chain}
    assert {n for n in before if before[n] != after[n]} == {s.name for s in chain if s.uses_data}
    assert {s.name for s in chain if not s.uses_data} >= {"benchmark", "report"}

    layout = Layout(cfg.run_dir)  # a record built from the first images, the manifest holding the second
    (layout.root / "onnx").mkdir(parents=True)
    (layout.root / "onnx" / "model.onnx").write_bytes(b"an onnx file")
    records.write(
        layout,
        "onnx/model.onnx",
        build={"status": "ok", "lineage": {"data": ctx.data_identity}},
        gates=[records.Gate.at_most("parity", "x", 0, 1).to_dict()],
    )
    assert records.row_status(layout, "onnx/model.onnx", 0)[0] == "pass"  # no run has loaded other data yet
    layout.manifest.write_text(json.dumps({"data": changed.data_identity}))
    status, reason = records.row_status(layout, "onnx/model.onnx", 0)
    assert status == "stale" and f"built from other data (content id {ctx.data_identity})" in reason


def test_explain_and_latency_tables_of_other_files_are_not_shown(tiny_run, tmp_path):
    """explain/<row>.json renders only while the file and its reference are the ones explained; a bench/latency.py
    table only while the checkpoints it was built from are unchanged."""
    from conftest import copy_run

    from pipeline.core.artifacts import file_sha
    from pipeline.stages.report.markdown import explanations
    from pipeline.stages.report.rows import current

    cfg = copy_run(tiny_run, tmp_path, "lineage_tables")
    layout = Layout(cfg.run_dir)
    int8, fp32 = layout.tflite("int8"), layout.tflite("fp32")
    explained = {
        "artifact": "tflite/int8.tflite",
        "reference": "tflite/fp32.tflite",
        "layers": [{"snr_db": 30}],
        "sha256": file_sha(int8),
        "reference_sha256": file_sha(fp32),
    }
    layout.explanation("tflite/int8.tflite").parent.mkdir(parents=True, exist_ok=True)
    layout.explanation("tflite/int8.tflite").write_text(json.dumps(explained))
    row = {"artifact": "tflite/int8.tflite", "source": "host", "status": "pass"}
    assert explanations(layout, [row]) == [explained]
    assert explanations(layout, [{**row, "status": "stale"}]) == []
    layout.explanation("tflite/int8.tflite").write_text(json.dumps({**explained, "sha256": "0" * 64}))
    assert explanations(layout, [row]) == []  # the int8 file was rebuilt since

    table = {"weights": {"train/best.pt": file_sha(layout.best)}, "rows": []}
    assert current(layout, table)
    assert not current(layout, {"rows": []})  # a table that does not say what it measured
    layout.best.write_bytes(layout.best.read_bytes() + b"\0")
    assert not current(layout, table)
