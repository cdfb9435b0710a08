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
from pipeline.core.errors import EdgeError
from pipeline.data import Normalization, eval_arrays, load_data, preprocess
from pipeline.engine.onnx_to_tflite import convert_tflite
from pipeline.engine.runners import OnnxRunner, TFLiteRunner, TorchRunner, open_runner


def record(run, artifact: str) -> dict:
    return json.loads((run.run_dir / "results" / f"{artifact}.json").read_text())


def gates(run, artifact: str) -> dict:
    return {g["name"]: g for g in record(run, artifact)["gates"]}


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
    assert diff <= 1e-4
    parity = gates(run, "onnx/model.onnx")["parity"]  # recorded over the whole evaluation set
    assert parity["threshold"] == 1e-4 and diff <= parity["value"] <= 1e-4 and parity["passed"]
    assert parity["figure"] == "max |dlogit| vs train/best.pt"


def test_four_tflite_files_pass_their_gates(run):
    expected = {
        "fp32": ("parity", 1e-3),
        "fp16": ("agreement", 0.995),
        "dynamic_range": ("top-1 drop", 1.0),
        "int8": ("top-1 drop", 1.0),
    }
    for variant, (name, threshold) in expected.items():
        rec = record(run, f"tflite/{variant}.tflite")
        assert [g["name"] for g in rec["gates"]] == [name] and rec["gates"][0]["passed"], rec["gates"]
        assert rec["gates"][0]["threshold"] == threshold
        assert rec["build"]["precision"] == variant and rec["build"]["stage"] == "convert"
    assert gates(run, "tflite/fp32.tflite")["parity"]["value"] <= 1e-3
    assert gates(run, "tflite/fp16.tflite")["agreement"]["value"] >= 0.995
    ref, int8 = record(run, "onnx/model.onnx")["evaluation"], record(run, "tflite/int8.tflite")["evaluation"]
    assert ref["images"] == int8["images"] == 1000 and ref["top1"] > 0.75
    assert ref["data_id"] == int8["data_id"] and int8["reference_top1"] == ref["top1"]  # the same images
    assert gates(run, "tflite/int8.tflite")["top-1 drop"]["value"] == pytest.approx(100 * (ref["top1"] - int8["top1"]))
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


def test_evaluate_pointed_elsewhere_writes_only_there(run, tmp_path, capsys):
    artifact = run.run_dir / "tflite" / "fp16.tflite"
    before = {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()}
    assert main(["evaluate", str(artifact), "eval_subset=500", f"runs_dir={tmp_path}", "name=side"]) == 0
    assert {p: p.read_bytes() for p in run.run_dir.rglob("*") if p.is_file()} == before  # the run is untouched
    (found,) = (tmp_path / "side" / "results" / "external").glob("*/fp16.tflite.json")
    row = json.loads(found.read_text())
    ev = row["evaluation"]
    assert ev["images"] == 500 and row["build"]["format"] == "tflite" and row["build"]["precision"] == "fp16"
    assert ev["top5"] >= ev["top1"] > 0.7
    assert len(ev["per_class_top1"]) == 10 and "Ankle boot" in ev["per_class_top1"]
    assert "top-1 " in capsys.readouterr().out


def test_missing_upstream_names_the_stage(tmp_path, capsys):
    args = [f"runs_dir={tmp_path}", "name=empty"]
    assert main(["export", *args]) == 2
    assert "run `resnet-edge train name=empty` first" in capsys.readouterr().err
    assert main(["convert", *args]) == 2
    assert "run `resnet-edge export name=empty` first" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope.tflite")]) == 2
    assert "nope.tflite: artifact not found" in capsys.readouterr().err


def test_unconvertible_op_surfaces_onnx2tf_reason_and_leaves_no_file(tmp_path):
    nodes = [
        helper.make_node("LpPool", ["input"], ["pooled"], kernel_shape=[2, 2], p=2),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 49])],
    )
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
    torch.onnx.export(
        model,
        torch.zeros(1, c, 32, 32),
        tmp_path / "m.onnx",
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )
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


def test_our_int8_file_is_the_one_onnx2tf_makes(tiny_run, tmp_path):
    """convert asks onnx2tf for fp32/fp16/dynamic-range and the SavedModel only, and makes the int8 file itself with
    onnx2tf's recipe (pipeline.engine.onnx_to_tflite.full_integer_int8), skipping onnx2tf's three other calibrated
    variants. The files must be byte for byte what onnx2tf 1.28 makes when it does all of it (its MaxPool pads with 0
    for int8 graphs: the tiny run's ResNet-18 has the ImageNet stem's max-pool)."""
    import contextlib
    import hashlib
    import io
    import os
    import shutil

    import onnx2tf
    import tf_keras

    from pipeline.chain import context
    from pipeline.core.names import VARIANTS
    from pipeline.engine.onnx_to_tflite import calibration_nhwc

    ctx = context(tiny_run)
    calib_u8 = ctx.calib_u8[:32]
    ours = convert_tflite(
        tiny_run.run_dir / "onnx" / "model.onnx",
        tmp_path / "ours",
        calib_u8,
        ctx.data.norm,
        tiny_run.image_size,
        ("fp32", "dynamic_range", "int8"),
    )
    shutil.copy(tiny_run.run_dir / "onnx" / "model.onnx", tmp_path / "model.onnx")
    np.save(tmp_path / "calib.npy", calibration_nhwc(calib_u8, tiny_run.image_size))
    mean, std = (np.asarray(v, np.float32).reshape(1, 1, 1, 1) for v in (ctx.data.norm.mean, ctx.data.norm.std))
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        tf_keras.backend.clear_session()  # as convert does: names (in the file) restart at 0
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            onnx2tf.convert(
                input_onnx_file_path=str(tmp_path / "model.onnx"),
                output_folder_path=str(tmp_path / "tf"),
                output_integer_quantized_tflite=True,
                quant_type="per-channel",
                custom_input_op_name_np_data_path=[["input", str(tmp_path / "calib.npy"), mean, std]],
                input_quant_dtype="int8",
                output_quant_dtype="int8",
                non_verbose=True,
            )
    finally:
        os.chdir(cwd)
    for variant in ("fp32", "dynamic_range", "int8"):
        digest = [
            hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (ours[variant], tmp_path / "tf" / f"model_{VARIANTS[variant]}.tflite")
        ]
        assert digest[0] == digest[1], variant


def test_convert_removes_only_the_work_folders_of_dead_conversions(tmp_path):
    """A killed conversion's .onnx2tf-* folder goes; one of a conversion running in another process stays (convert
    used to remove every .onnx2tf-* folder, another process's included)."""
    import os
    import subprocess
    import sys

    from pipeline.engine.onnx_to_tflite import clear_dead_work

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folders = {
        f".onnx2tf-{dead.stdout.strip()}-a": False,
        f".onnx2tf-{os.getppid()}-b": True,
        f".onnx2tf-structured50_{dead.stdout.strip()}-c": True,
        ".onnx2tf-old": True,
    }
    for name in folders:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.tflite").write_bytes(b"work")
    assert clear_dead_work(tmp_path, "") == [f".onnx2tf-{dead.stdout.strip()}-a"]
    assert {p.name for p in tmp_path.iterdir()} == {n for n, stays in folders.items() if stays}
    assert clear_dead_work(tmp_path, "structured50_") == [f".onnx2tf-structured50_{dead.stdout.strip()}-c"]


def test_onnx2tf_simplifies_in_this_process(tiny_run, tmp_path, monkeypatch, capsys):
    """onnx2tf's three `onnxsim` runs per conversion go through onnxsim's entry point in this process (each program
    spent 2 s starting and importing torch): no onnxsim process starts, and onnxsim's own output is in the log."""
    import subprocess

    from pipeline.chain import context

    started = []
    real = subprocess.check_output
    monkeypatch.setattr(subprocess, "check_output", lambda cmd, **kw: started.append(cmd) or real(cmd, **kw))
    ctx = context(tiny_run)
    capsys.readouterr()
    paths = convert_tflite(
        tiny_run.run_dir / "onnx" / "model.onnx",
        tmp_path,
        ctx.calib_u8[:8],
        ctx.data.norm,
        tiny_run.image_size,
        ("fp32",),
    )
    assert paths["fp32"].stat().st_size > 1000
    assert not [cmd for cmd in started if cmd and cmd[0] == "onnxsim"], started
    log = capsys.readouterr().out  # run_onnx2tf prints onnx2tf's log (into the stage's log file in a stage)
    assert log.count("Simplifying...") == 3 and "Model optimizing complete" in log
