"""resnet-edge fit, its parts: channel plans (quantization/channels.py) and the latency table
(pipeline/engine/latency_table.py) measured with LiteRT's int8 kernels."""

import copy
import json

import numpy as np
import pytest
import torch

from models import build_model
from pipeline.core.errors import EdgeError
from pipeline.engine import latency_table as lt
from quantization.channels import OpShape, channel_groups, op_shapes, prune_to

EXAMPLE = torch.zeros(1, 1, 32, 32)


def resnet18(width=0.25):
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=10, in_channels=1, width=width, stem="imagenet").eval()


def test_resnet18_has_four_residual_streams_and_eight_block_groups():
    groups = {g.name: g for g in channel_groups(resnet18(), EXAMPLE)}
    assert len(groups) == 12
    streams = ["conv1", "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    assert set(streams) < set(groups)
    # a stream: the stem (or projection) and every block's last conv of that stage write it, the next convs read it
    assert set(groups["conv1"].outputs) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert set(groups["conv1"].inputs) == {
        "layer1.0.conv1",
        "layer1.1.conv1",
        "layer2.0.conv1",
        "layer2.0.downsample.0",
    }
    assert groups["layer3.1.conv1"].outputs == ("layer3.1.conv1",) and groups["layer3.1.conv1"].inputs == (
        "layer3.1.conv2",
    )
    assert [groups[s].channels for s in streams] == [16, 32, 64, 128]


def test_a_plan_prunes_to_exactly_its_counts_as_predicted_without_pruning():
    model = resnet18()
    groups = channel_groups(model, EXAMPLE)
    plan = {"conv1": 8, "layer1.0.conv1": 8, "layer3.0.downsample.0": 24, "layer4.1.conv1": 40}
    predicted = op_shapes(model, 64, 1, plan, groups)
    pruned = prune_to(copy.deepcopy(model), EXAMPLE, plan)
    assert op_shapes(pruned, 64, 1) == predicted
    by_name = {s.name: s for s in predicted if s.op == "conv"}
    assert (by_name["conv1"].cout, by_name["layer1.1.conv2"].cout, by_name["layer2.0.conv1"].cin) == (8, 8, 8)
    assert (by_name["layer4.1.conv1"].cout, by_name["layer4.1.conv2"].cin, by_name["layer4.1.conv2"].cout) == (
        40,
        40,
        128,
    )
    adds = [s for s in predicted if s.op == "add"]
    assert [a.cout for a in adds] == [8, 8, 32, 32, 24, 24, 128, 128]  # the streams' counts, block by block
    assert [s.cout for s in predicted if s.op == "maxpool"] == [8]
    assert pruned(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_pruning_removes_the_weakest_channels_of_a_group():
    """Channels whose every weight in the group is zero are the ones a plan removes: the output does not change."""
    model = resnet18()
    block = model.layer2[1]
    dead = [1, 4, 5, 9, 17, 30]
    with torch.no_grad():
        block.conv1.weight[dead] = 0
        block.bn1.weight[dead] = 0
        block.bn1.bias[dead] = 0
        block.conv2.weight[:, dead] = 0
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        before = model(x)
        pruned = prune_to(copy.deepcopy(model), EXAMPLE, {"layer2.1.conv1": 32 - len(dead)})
        after = pruned(x)
    assert pruned.layer2[1].conv1.out_channels == 26
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # a cut deeper than the dead channels changes it
        assert not torch.allclose(prune_to(copy.deepcopy(model), EXAMPLE, {"layer2.1.conv1": 20})(x), before, atol=1e-3)


def test_a_bad_plan_is_one_line():
    with pytest.raises(EdgeError, match="no prunable group 'fc'"):
        prune_to(resnet18(), EXAMPLE, {"fc": 4})
    with pytest.raises(EdgeError, match="conv1 keeps 40 of 16 channels"):
        prune_to(resnet18(), EXAMPLE, {"conv1": 40})


def op_names(blob: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob)
    interpreter.allocate_tensors()
    return [d["op_name"] for d in interpreter._get_ops_details() if d["op_name"] != "DELEGATE"]


def test_table_entries_are_the_ops_onnx2tf_writes():
    """A strided padded conv or pool gets its PAD op (onnx2tf's layout), a stride-1 conv SAME padding, an add two
    inputs; every entry runs in LiteRT with int8 tensors of the stated shapes."""
    from ai_edge_litert.interpreter import Interpreter

    assert op_names(lt.op_tflite(OpShape("conv", "c", 16, 32, 3, 2, 1, 56))) == ["PAD", "CONV_2D"]
    assert op_names(lt.op_tflite(OpShape("conv", "c", 16, 32, 3, 1, 1, 56))) == ["CONV_2D"]
    assert op_names(lt.op_tflite(OpShape("maxpool", "p", 16, 16, 3, 2, 1, 112))) == ["PAD", "MAX_POOL_2D"]
    add = Interpreter(model_content=lt.op_tflite(OpShape("add", "a", 24, 24, 1, 1, 0, 14)))
    add.allocate_tensors()
    assert [tuple(d["shape"]) for d in add.get_input_details()] == [(1, 14, 14, 24)] * 2
    conv = Interpreter(model_content=lt.op_tflite(OpShape("conv", "c", 16, 32, 3, 2, 1, 56)))
    conv.allocate_tensors()
    assert tuple(conv.get_output_details()[0]["shape"]) == (1, 28, 28, 32)
    assert conv.get_output_details()[0]["dtype"] == np.int8
    shapes = op_shapes(resnet18(), 64, 1)
    assert [s.op for s in shapes].count("conv") == 20 and [s.op for s in shapes].count("add") == 8


@pytest.fixture
def quick(monkeypatch):
    """One short round per entry: the table's logic, not its figures."""
    monkeypatch.setattr(lt, "ROUNDS", 1)
    monkeypatch.setattr(lt, "SPAN_S", 0.0)
    monkeypatch.setattr(lt, "MAX_SPAN_S", 0.0)


def test_a_table_is_cached_reused_and_rebuilt_for_another_size_or_thread_count(tmp_path, quick):
    path = tmp_path / "table.json"
    shapes = [OpShape("conv", "c", 16, 16, 3, 1, 1, 28), OpShape("add", "a", 16, 16, 1, 1, 0, 28)]
    table = lt.LatencyTable(path, 28, 1)
    table.measure(shapes)
    assert table.measured == 2 and not table.reused
    table.save()
    saved = json.loads(path.read_text())
    assert saved["format"] == lt.FORMAT and saved["identity"]["size"] == 28 and saved["identity"]["threads"] == 1
    assert set(saved["entries"]) == {"conv 3x3/1 p1 28px 16>16", "add 28px 16>16"}
    assert all(ms > 0 for ms in saved["entries"].values())

    again = lt.LatencyTable(path, 28, 1)
    again.measure(shapes)
    assert again.reused and again.measured == 0 and again.entries == saved["entries"]
    for size, threads in ((32, 1), (28, 2)):
        other = lt.LatencyTable(path, size, threads)
        assert not other.reused and other.entries == {}


def test_the_prediction_reads_the_table(tmp_path, quick):
    """The entries and the calibration line are what predict adds up: change the file, the prediction follows."""
    path = tmp_path / "table.json"
    shapes = [OpShape("conv", "c", 64, 64, 3, 1, 1, 14), OpShape("add", "a", 64, 64, 1, 1, 0, 14)]
    table = lt.LatencyTable(path, 14, 1)
    table.measure(shapes)
    table.rest["m"] = {"scale": 2.0, "offset_ms": 0.5}
    table.save()
    data = json.loads(path.read_text())
    data["entries"]["conv 3x3/1 p1 14px 64>64"] = 7.0
    data["entries"]["add 14px 64>64"] = 1.0
    path.write_text(json.dumps(data))
    assert lt.LatencyTable(path, 14, 1).predict("m", shapes) == pytest.approx(2.0 * 8.0 + 0.5)
    with pytest.raises(EdgeError, match="not calibrated for resnet50"):
        table.predict("resnet50", shapes)
    with pytest.raises(EdgeError, match="no entry for conv 1x1/1 p0 14px 64>8"):
        table.predict("m", [OpShape("conv", "c", 64, 8, 1, 1, 0, 14)])


# --- the stage, on the session's tiny run (quarter-width ResNet-18, 28 px), latency at 64 px and 1 thread ----------

# max_int8_drop=10: the quarter-width tiny model loses 1-6 points to a cut or two of its 8-16-channel groups, as many
# as the noisy 64 px calibration leads the search to (these tests are of the search and its budget; the gate's own
# tests use the default)
FIT = {
    "budget_size": 64,
    "budget_threads": 1,
    "fit_steps": 3,
    "fit_step_images": 256,
    "structured_epochs": 1,
    "max_int8_drop": 10.0,
    "run_litert": False,  # NNCF's route of the answer: test_fit_returns_a_gated_file_within_a_latency_budget
}


@pytest.fixture(scope="module")
def fit_base(tiny_run, tmp_path_factory):
    """A copy of the tiny run with its fit table built and calibrated, by a budget nothing meets: (cfg, fit record)."""
    import dataclasses

    from conftest import copy_run

    from pipeline.cli import main
    from pipeline.run import run_one

    mp = pytest.MonkeyPatch()
    mp.setattr(lt, "SPAN_S", 2.0)
    mp.setattr(lt, "MAX_SPAN_S", 10.0)
    cfg = copy_run(tiny_run, tmp_path_factory.mktemp("fit"), "fit", **FIT)
    config_before = (cfg.run_dir / "config.yaml").read_bytes()
    with pytest.raises(EdgeError) as e:
        run_one("fit", dataclasses.replace(cfg, budget_ms=0.001))
    record = json.loads((cfg.run_dir / "fit" / "fit_0p001ms.json").read_text())
    yield cfg, record, str(e.value), main, config_before
    mp.undo()


def test_a_budget_nothing_reaches_is_one_line_naming_the_fastest_and_keeps_the_trace(fit_base, capsys):
    cfg, record, message, main, config_before = fit_base
    assert record["feasible"] is False and record["fastest"] < record["calibration"]["whole_ms"]
    assert f"the fastest reachable is {record['fastest']:.3f} ms" in message and "\n" not in message
    assert main(["fit", str(cfg.run_dir), "budget_ms=0.001"]) == 2
    err = capsys.readouterr().err
    assert "no plan reaches 0.001 ms" in err and "fit/fit_0p001ms.json" in err
    table = json.loads((cfg.run_dir / "fit" / "latency_64px_1thr.json").read_text())
    assert table["identity"]["size"] == 64 and len(table["entries"]) == record["table"]["entries"] > 20
    # the calibration is filed under the model as built: the data's channels and classes, not the config's None
    assert list(table["rest"]) == ["resnet18 width=0.25 stem=imagenet in=1 classes=10 levels=8 round_to=8"]
    # refused (infeasible) after it began: the run's config as it was, the next `run` does not try it again
    assert (cfg.run_dir / "config.yaml").read_bytes() == config_before


def fit_copy(fit_base, tmp_path, **budget):
    import dataclasses

    from conftest import copy_run

    return dataclasses.replace(copy_run(fit_base[0], tmp_path, "f"), **budget)


def measured_as(monkeypatch, figures, dense_ms):
    """The final whole-file timings replaced by `figures` (one per timing, the last repeated): what the stage does
    with a measurement, apart from this host's noise (a 2-core VM whose speed halves for seconds at a time; the table
    and its calibration stay real)."""
    calls = []

    def fake(paths, threads):
        calls.append(paths)
        ms = figures[min(len(calls), len(figures)) - 1]
        return {p: (ms if p.name.startswith("fit_") else dense_ms) for p in paths}  # the dense file as calibrated

    monkeypatch.setattr(lt, "wholes", fake)
    return calls


def fit_run(fit_base, tmp_path, monkeypatch, figures, **changes):
    from pipeline.run import run_one

    monkeypatch.setattr(lt, "SPAN_S", 2.0)
    monkeypatch.setattr(lt, "MAX_SPAN_S", 10.0)
    dense, fastest = fit_base[1]["calibration"]["whole_ms"], fit_base[1]["fastest"]
    budget = round(fastest + 0.7 * (dense - fastest), 4)  # a cut or two below the dense file
    cfg = fit_copy(fit_base, tmp_path, budget_ms=budget, **changes)
    calls = measured_as(monkeypatch, [f * budget for f in figures], dense)
    table_before = json.loads((cfg.run_dir / "fit" / "latency_64px_1thr.json").read_text())["entries"]
    assert run_one("fit", cfg) == 0
    name = f"fit_{budget:g}ms".replace(".", "p")
    record = json.loads((cfg.run_dir / "fit" / f"{name}.json").read_text())
    assert json.loads((cfg.run_dir / "fit" / "latency_64px_1thr.json").read_text())["entries"] == table_before
    return cfg, name, budget, record, calls


def test_fit_returns_a_gated_file_within_a_latency_budget(fit_base, tmp_path, monkeypatch, test_split_watch):
    """Between the dense file and the fastest plan: a pruned file, fewer channels in some groups, predicted and
    measured within the budget, a gated row of the run; the table was reused, not measured again. Every choice on
    the way (the search's scores, its steps' fine-tunes, the uniform baseline) saw validation images only: the test
    split was read by the gates alone."""
    from pipeline.chain import context
    from pipeline.core import records

    cfg, name, budget, record, calls = fit_run(fit_base, tmp_path, monkeypatch, [0.99], run_litert=True)
    assert test_split_watch() == [] and test_split_watch.reads  # the gates did read it
    assert record["pruned"] and record["trace"] and record["measured_ms"] <= budget and len(calls) == 1
    assert record["predicted"] <= budget < fit_base[1]["calibration"]["whole_ms"]
    groups = {g.name: g.channels for g in channel_groups(resnet18(), EXAMPLE)}
    assert any(record["plan"][g] < c for g, c in groups.items())
    assert [t["predicted"] for t in record["trace"]] == sorted((t["predicted"] for t in record["trace"]), reverse=True)
    row = records.read(context(cfg).layout, f"tflite/{name}_int8.tflite")
    assert records.status(row)[0] == "pass" and row["build"]["fit"]["budget"]["value"] == budget
    assert f"tflite/{name}_int8.tflite" in context(cfg).rows
    from pipeline.stages.bundle import chosen  # the device bundle ships it (its default globs: fp32,*int8,...)

    assert {f"tflite/{name}_int8.tflite", f"tflite/{name}_nncf_int8.tflite"} <= set(chosen(context(cfg)))

    from pipeline.stages.report import report  # the report's fit section: the budget, the figures, the trace

    made = report(context(cfg))
    md = made["md"].read_text()
    assert made["fit"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and made["fit"].name == "fit.png"
    assert f"Recommended phone file: tflite/{name}_int8.tflite" in md  # the answer to the budget, not the fastest
    assert "Fit to a budget" in made["html"].read_text()
    from pipeline.compare import compare  # compare names each run's answer to its budget

    compared = compare([cfg.run_dir], tmp_path / "compare")["md"].read_text()
    assert f"Within each run's budget (fit): {cfg.run_dir.name} / tflite/{name}_int8.tflite" in compared
    section = md[md.index("## Fit to a budget (fit)") :]
    assert f"tflite/{name}_int8.tflite: budget {budget:g} ms at 64 px, 1 thread(s)" in section
    assert f"measured {record['measured_ms']:.3f} ms" in section and f"predicted {record['predicted']:.3f}" in section
    step = record["trace"][0]
    assert f"| 1 | {step['group']} | {step['channels']} | {step['predicted']:.3f} |" in section
    # one ratio for every group beside it: each grid level, down to every group at its fewest (the fastest plan)
    uniform = record["uniform"]
    kept = [u["channels_kept"] for u in uniform]
    assert len(uniform) == 7 and kept == sorted(kept, reverse=True) and len(set(kept)) == 7
    assert uniform[-1]["predicted"] == pytest.approx(record["fastest"]) and record["fastest"] < uniform[0]["predicted"]
    assert "One ratio for every group" in section


def test_a_file_measured_over_the_budget_takes_one_more_step(fit_base, tmp_path, monkeypatch):
    """Measured over (twice: the second opinion too), the search cuts once more from where it stopped; then within.
    (The gate at 20 points: a second search of the tiny model may cost more than 10.)"""
    _, _, budget, record, calls = fit_run(fit_base, tmp_path, monkeypatch, [1.2, 1.2, 0.95], max_int8_drop=20.0)
    assert len(calls) == 3 and record["measured_ms"] == pytest.approx(0.95 * budget)
    first = next(i for i, t in enumerate(record["trace"]) if t.get("after_measuring"))  # the extra search's first
    assert first > 0 and record["trace"][first]["predicted"] < record["trace"][first - 1]["predicted"]
    assert [t["iteration"] for t in record["trace"]] == list(range(1, len(record["trace"]) + 1))


def test_a_budget_the_dense_file_meets_returns_it_unpruned(fit_base, tmp_path, monkeypatch, capsys):
    """Also: Ctrl-C while the file is being delivered is one line and exit 130, and leaves no row standing (the
    half-written file is a failed row); the rerun delivers it, and names the command that shows it in the report."""
    from pipeline.cli import main
    from pipeline.core import records
    from pipeline.core.layout import Layout
    from pipeline.stages import fit

    monkeypatch.setattr(lt, "SPAN_S", 2.0)
    monkeypatch.setattr(lt, "MAX_SPAN_S", 10.0)
    budget = round(3 * fit_base[1]["calibration"]["whole_ms"], 3)
    cfg = fit_copy(fit_base, tmp_path, budget_ms=budget)
    name = f"fit_{budget:g}ms".replace(".", "p", 1)
    deliver = fit.deliver

    def interrupted(ctx, ckpt, stem, build):
        deliver(ctx, ckpt, stem, build)  # onnx2tf's row made, then Ctrl-C before the NNCF route and the record
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "deliver", interrupted)
    try:
        code = main(["fit", str(cfg.run_dir), f"budget_ms={budget}"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped the CLI: a Python traceback on the console")
    assert code == 130
    err = capsys.readouterr().err
    assert err.endswith("error: interrupted: fit stopped; what it finished is kept, run it again for the rest\n")
    assert "Traceback" not in err
    row = records.read(Layout(cfg.run_dir), f"tflite/{name}_int8.tflite")
    assert records.status(row)[0] == "failed" and "interrupted" in row["build"]["error"]
    monkeypatch.setattr(fit, "deliver", deliver)
    (cfg.run_dir / "report").mkdir()
    (cfg.run_dir / "report" / "report.md").write_text("an earlier report\n")
    assert main(["fit", str(cfg.run_dir)]) == 0
    record = json.loads((cfg.run_dir / "fit" / f"{name}.json").read_text())
    assert record["pruned"] is False and record["trace"] == []
    err = capsys.readouterr().err
    assert "the dense int8 file meets the budget" in err
    assert f"report/ does not show these rows yet; `resnet-edge run {cfg.run_dir}` benchmarks them" in err
    assert records.status(records.read(Layout(cfg.run_dir), f"tflite/{name}_int8.tflite"))[0] == "pass"


def test_one_budget_at_a_time_and_fit_needs_one(tiny_run, tmp_path):
    from conftest import copy_run

    from pipeline.run import run_one

    cfg = copy_run(tiny_run, tmp_path, "b", budget_ms=2.0, budget_mib=1.0)
    with pytest.raises(EdgeError, match="budget_ms=2 budget_mib=1: give one budget"):
        run_one("fit", cfg)
    with pytest.raises(EdgeError, match="fit: give a budget"):
        run_one("fit", copy_run(tiny_run, tmp_path, "c"))


def test_a_speedup_budget_is_against_the_fp32_file_timed_with_it(fit_base, tmp_path, monkeypatch):
    """budget_speedup=0.5: the target is twice the run's fp32 file at the budget's size, timed with the dense int8
    file; the dense int8 file meets it (with room for this host's slow spells)."""
    from pipeline.run import run_one

    monkeypatch.setattr(lt, "SPAN_S", 2.0)
    monkeypatch.setattr(lt, "MAX_SPAN_S", 10.0)
    cfg = fit_copy(fit_base, tmp_path, budget_speedup=0.5)
    assert run_one("fit", cfg) == 0
    record = json.loads((cfg.run_dir / "fit" / "fit_0p5x.json").read_text())
    ref = record["reference"]  # the fp32 file's ms at the table's calibrated speed: its ratio to the dense file
    assert record["budget"]["target"] == pytest.approx(2 * ref["fp32_ms"])
    assert ref["fp32_ms"] == pytest.approx(
        ref["timed"]["fp32_ms"] / ref["timed"]["dense_int8_ms"] * ref["dense_int8_ms"]
    )
    assert ref["dense_int8_ms"] == record["calibration"]["whole_ms"] and not record["pruned"]
    # the answer delivered, fit/ keeps its tables, records and what the next fit and the bundle reuse, no more
    kept = sorted(p.name for p in (cfg.run_dir / "fit").iterdir())
    assert record["files_kept"] is False and not any(k.endswith(".onnx") for k in kept), kept
    assert "dense_64px_fp32.tflite" not in kept and "fit_0p5x_64px_int8.tflite" not in kept
    assert {"dense_64px_int8.tflite", "latency_64px_1thr.json", "fit_0p5x.json"} <= set(kept)


def test_a_size_budget_returns_a_file_within_it(fit_base, tmp_path, monkeypatch):
    from pipeline.run import run_one

    monkeypatch.setattr(lt, "SPAN_S", 2.0)
    monkeypatch.setattr(lt, "MAX_SPAN_S", 10.0)
    dense_mib = (fit_base[0].run_dir / "fit" / "dense_64px_int8.tflite").stat().st_size / 2**20
    budget = round(0.6 * dense_mib, 3)
    cfg = fit_copy(fit_base, tmp_path, budget_mib=budget, keep_fit_files=True)
    assert run_one("fit", cfg) == 0
    name = f"fit_{budget:g}mib".replace(".", "p")
    record = json.loads((cfg.run_dir / "fit" / f"{name}.json").read_text())
    assert record["pruned"] and record["measured_mib"] <= budget and record["budget"]["unit"] == "MiB"
    assert record["files_kept"] and (cfg.run_dir / "fit" / "dense_64px.onnx").is_file()  # keep_fit_files=true
    assert (cfg.run_dir / "tflite" / f"{name}_int8.tflite").stat().st_size / 2**20 <= budget


def test_the_sensitivity_search_scores_every_cut_once_and_takes_one_level_for_every_group(
    fit_base, tmp_path, monkeypatch, test_split_watch
):
    """fit_search=sensitivity on a size budget: every group's every cut scored alone on the dense model, then each
    group at its fewest channels losing at most one accuracy level, and the plan within the budget."""
    from pipeline.engine.fit_search import levels
    from pipeline.run import run_one

    monkeypatch.setattr(lt, "SPAN_S", 2.0)
    monkeypatch.setattr(lt, "MAX_SPAN_S", 10.0)
    dense_mib = (fit_base[0].run_dir / "fit" / "dense_64px_int8.tflite").stat().st_size / 2**20
    budget = round(0.6 * dense_mib, 3)
    cfg = fit_copy(fit_base, tmp_path, budget_mib=budget, fit_search="sensitivity")
    assert run_one("fit", cfg) == 0
    assert test_split_watch() == [] and test_split_watch.reads  # scored on validation images; the gates read test
    record = json.loads((cfg.run_dir / "fit" / f"fit_{budget:g}mib.json".replace(".", "p", 1)).read_text())
    assert record["search"] == "sensitivity" and len(record["trace"]) == 1
    step, groups = record["trace"][0], channel_groups(resnet18(), EXAMPLE)
    grid = {g.name: levels(g.channels, cfg.structured_round_to, cfg.fit_levels) for g in groups}
    scored = step["proposals"]
    assert sorted((p["group"], p["channels"]) for p in scored) == sorted(
        (n, c) for n, cs in grid.items() for c in cs[1:]
    )
    base = record["dense_val_top1"]
    drop = step["drop"]
    for g in groups:  # each group at its fewest channels within the level (rounded as the trace prints it)
        within = [p["channels"] for p in scored if p["group"] == g.name and base - p["val_top1"] <= drop]
        assert record["plan"][g.name] == min(within, default=g.channels)
    assert record["predicted"] <= budget and record["measured_mib"] <= budget


def test_a_budget_named_on_a_run_replaces_its_saved_one(tmp_path):
    """A run fitted to budget_ms=3.4 and then given budget_speedup=10 fits to the speedup (not: two budgets)."""
    from pipeline.config import load_config
    from pipeline.config.load import open_run, save_config
    from pipeline.stages.fit import budget_of, fit_name

    cfg = load_config(None, {"runs_dir": str(tmp_path), "name": "r", "budget_ms": "3.4"})
    save_config(cfg, cfg.run_dir / "config.yaml")
    again = open_run(cfg.run_dir, {"budget_speedup": "10"})
    assert budget_of(again) == ("speedup", 10.0) and fit_name(again) == "fit_10x"
    assert budget_of(open_run(cfg.run_dir)) == ("ms", 3.4) and fit_name(open_run(cfg.run_dir)) == "fit_3p4ms"
