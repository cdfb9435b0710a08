"""torch -> ONNX -> TFLite x4 on a briefly trained quarter-width ResNet-18 and real Fashion-MNIST, every gate's
figure asserted; then every model family through export and all four conversions."""

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from models import build_model
from pipeline.cli import main
from pipeline.convert import FP16_AGREEMENT, FP32_PARITY, convert_tflite, gate_tflite
from pipeline.data import Normalization, load_data, preprocess, eval_arrays
from pipeline.errors import EdgeError
from pipeline.export import ONNX_PARITY
from pipeline.runners import OnnxRunner, TFLiteRunner, TorchRunner, open_runner


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run


def test_export_is_gated_onnx(run, fmnist):
    path = run.run_dir / "onnx" / "model.onnx"
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]  # folded into the convs
    x, _ = eval_arrays(fmnist, 28, 256)
    diff = np.abs(OnnxRunner(path)(x) - TorchRunner(run.run_dir / "train" / "best.pt")(x)).max()
    assert diff <= ONNX_PARITY


def test_four_tflite_files_pass_their_gates(run):
    gates = {g["artifact"]: g for g in json.loads((run.run_dir / "tflite" / "gates.json").read_text())}
    assert set(gates) == {"fp32.tflite", "fp16.tflite", "dynamic_range.tflite", "int8.tflite"}
    assert all(g["passed"] for g in gates.values())
    assert gates["fp32.tflite"]["value"] <= FP32_PARITY
    assert gates["fp16.tflite"]["value"] >= FP16_AGREEMENT
    assert gates["int8.tflite"]["value"] <= 1.0 and gates["dynamic_range.tflite"]["value"] <= 1.0
    rows = {v: json.loads((run.run_dir / "eval" / f"{v}.json").read_text()) for v in ("model", "int8", "fp16")}
    assert rows["model"]["images"] == 1000 and rows["model"]["top1"] > 0.75
    assert abs(rows["int8"]["top1"] - rows["model"]["top1"]) <= 0.01
    sizes = {v: (run.run_dir / "tflite" / f"{v}.tflite").stat().st_size for v in ("fp32", "fp16", "int8")}
    assert sizes["fp16"] < 0.55 * sizes["fp32"] and sizes["int8"] < 0.3 * sizes["fp32"]


def test_int8_file_has_int8_io_and_the_runner_handles_it(run, fmnist):
    runner = open_runner(run.run_dir / "tflite" / "int8.tflite", threads=1)
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    assert tuple(runner.input["shape"]) == (1, 28, 28, 1)  # NHWC: the runner transposes from NCHW
    x, _ = eval_arrays(fmnist, 28, 200)
    ref = OnnxRunner(run.run_dir / "onnx" / "model.onnx")(x)
    out = runner(x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.97
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.99


def test_evaluate_cli_writes_scores(run, capsys):
    artifact = run.run_dir / "tflite" / "fp16.tflite"
    assert main(["evaluate", str(artifact), "eval_subset=500"]) == 0
    row = json.loads((run.run_dir / "eval" / "fp16.json").read_text())
    assert row["images"] == 500 and row["format"] == "tflite" and row["precision"] == "fp16"
    assert row["top5"] >= row["top1"] > 0.7 and row["agreement"] >= 0.99
    assert len(row["per_class_top1"]) == 10 and "Ankle boot" in row["per_class_top1"]
    assert row["reference"].endswith("onnx/model.onnx")


def test_failed_gate_names_artifact_figure_and_threshold(run):
    rows = {v: json.loads((run.run_dir / "eval" / f"{v}.json").read_text()) for v in ("model", "int8")}
    gates = gate_tflite({"int8": rows["int8"]}, rows["model"], max_int8_drop=-50)
    assert not gates[0].passed
    assert gates[0].text().startswith("int8.tflite: top-1 drop vs fp32 (points)") and "threshold -50" in gates[0].text()


def test_missing_upstream_names_the_stage(tmp_path, capsys):
    args = [f"runs_dir={tmp_path}", "name=empty"]
    assert main(["export", *args]) == 2
    assert "run `resnet-edge train name=empty` first" in capsys.readouterr().err
    assert main(["convert", *args]) == 2
    assert "run `resnet-edge export name=empty` first" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.tflite")]) == 2
    assert "nope.tflite: artifact not found" in capsys.readouterr().err


def test_unconvertible_op_surfaces_onnx2tf_reason_and_leaves_no_file(tmp_path):
    nodes = [helper.make_node("LpPool", ["input"], ["pooled"], kernel_shape=[2, 2], p=2),
             helper.make_node("Flatten", ["pooled"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 49])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "lp.onnx")
    images = np.random.default_rng(0).integers(0, 255, (8, 8, 8, 1), dtype=np.uint8)
    with pytest.raises(EdgeError, match=r"onnx2tf failed: .*LpPool") as err:
        convert_tflite(tmp_path / "lp.onnx", tmp_path / "tflite", images, Normalization((0.5,), (0.5,)), 8)
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "tflite").glob("*.tflite"))


# Every family, both shortcuts, both stems, grayscale and RGB: random weights, width 1/8, 32 px.
FAMILY = [
    ("resnet18", {"shortcut": "A", "stem": "small", "in_channels": 1}),
    ("resnet34", {"shortcut": "B", "stem": "imagenet", "in_channels": 3}),
    ("resnet50", {"shortcut": "A", "stem": "imagenet", "in_channels": 1}),
    ("resnet101", {"shortcut": "B", "stem": "small", "in_channels": 3}),
    ("resnet152", {"shortcut": "A", "stem": "small", "in_channels": 3}),
    ("mobilenet_v2", {"stem": "small", "in_channels": 1}),
    ("mobilenet_v2", {"stem": "imagenet", "in_channels": 3}),
]


@pytest.mark.parametrize("name,options", FAMILY, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in FAMILY])
def test_every_model_exports_and_converts(name, options, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, width=0.125, **options).eval()
    c = options["in_channels"]
    images = load_data("fashion_mnist", val_size=100, calib_size=64).calibration.images
    images = np.repeat(images, 3, -1) if c == 3 else images  # real pictures for the RGB nets too
    norm = Normalization((0.5,) * c, (0.25,) * c)
    torch.onnx.export(model, torch.zeros(1, c, 32, 32), tmp_path / "m.onnx", input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    paths = convert_tflite(tmp_path / "m.onnx", tmp_path / "tflite", images, norm, 32)
    x = preprocess(images[:32], norm, 32)
    ref = OnnxRunner(tmp_path / "m.onnx")(x)
    scale = np.abs(ref).max()
    outs = {v: TFLiteRunner(p)(x) for v, p in paths.items()}
    assert np.abs(outs["fp32"] - ref).max() <= 1e-4 * scale + 1e-5  # random deep nets have huge logits
    assert (outs["fp16"].argmax(1) == ref.argmax(1)).mean() >= 0.95
    for v in ("dynamic_range", "int8"):
        cos = (outs[v] * ref).sum() / (np.linalg.norm(outs[v]) * np.linalg.norm(ref))
        assert cos > 0.99, (v, cos)
