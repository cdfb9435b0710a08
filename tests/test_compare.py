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
    assert "<img alt=\"top-1 vs size\" src=\"data:image/png;base64," in (out / "compare.html").read_text()


def test_compare_refuses_runs_of_another_image_size_or_data_set(tiny_run, tmp_path, capsys):
    bigger = copy_run(tiny_run, tmp_path, "tiny_32", image_size=32)
    assert main(["compare", str(tiny_run.run_dir), str(bigger.run_dir), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ in image size" in err[0] and "(image size 28)" in err[0]
    cifar = copy_run(tiny_run, tmp_path, "tiny_cifar", data_source="cifar10")
    assert main(["compare", str(tiny_run.run_dir), str(cifar.run_dir), "--out", str(tmp_path / "cmp")]) == 2
    assert "differ in data set" in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()  # nothing written for a refused comparison
