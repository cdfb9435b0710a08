"""NNCF PTQ / QAT / magnitude pruning and torch-pruning channel pruning on the briefly trained tiny ResNet-18."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from pipeline.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from pipeline.cli import main
from pipeline.data import load_data, preprocess
from pipeline.errors import EdgeError
from pipeline.runners import OnnxRunner, TFLiteRunner
from pipeline.train import fine_tune
from quantization import nncf_ops
from quantization.stages import prune_stage, quantize_stage


def test_ptq_int8_onnx_runs_with_a_small_drop(tiny_run):
    rows = quantize_stage(tiny_run)
    row = rows[0]
    path = tiny_run.run_dir / "quant" / "ptq_int8.onnx"
    assert row["artifact"] == str(path) and row["precision"] == "int8" and row["images"] == 1000
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    assert row["drop_points"] <= 1.0 and row["gate"] == "pass"
    assert row["size_mib"] < 0.5 * (tiny_run.run_dir / "onnx" / "model.onnx").stat().st_size / 2**20
    summary = json.loads((tiny_run.run_dir / "quant" / "summary.json").read_text())
    assert summary["ptq_int8.onnx"]["method"] == "nncf_ptq"


def test_magnitude_pruning_sparsity_reaches_the_int8_tflite(tiny_run):
    cfg = dataclasses.replace(tiny_run, prune_ratio=0.5, prune_epochs=1, max_int8_drop=3.0)
    rows = {r["precision"]: r for r in prune_stage(cfg, "magnitude")}
    int8 = rows["int8"]
    assert abs(int8["nncf_sparsity_prunable"] - 0.5) <= 0.02
    assert abs(int8["sparsity_tflite_int8"] - 0.5) <= 0.02  # the zeros survive export, BN folding and int8
    assert int8["gzip_mib"] < 0.75 * int8["size_mib"]  # dense file, compressible zeros
    ckpt = load_checkpoint(tiny_run.run_dir / "quant" / "pruned50.pt")
    weights = [v for k, v in ckpt["model"].items() if k.endswith("weight") and v.dim() > 1]
    zero = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert abs(zero - 0.5) <= 0.02
    assert TFLiteRunner(int8["artifact"]).input["dtype"] == np.int8


def test_structured_pruning_cuts_macs_and_still_converts(tiny_run):
    cfg = dataclasses.replace(tiny_run, structured_ratio=0.5, structured_epochs=3, structured_lr=0.05,
                              finetune_subset=6000, max_int8_drop=15.0)
    rows = {r["precision"]: r for r in prune_stage(cfg, "structured")}
    int8 = rows["int8"]
    # half the channels of each conv: ~1 - 0.5^2 of the MACs (the image input and the classes stay)
    assert 0.65 <= int8["macs_cut"] <= 0.8 and int8["macs_after"] == int8["macs"]
    assert int8["params_after"] < 0.35 * int8["params_before"]
    dense_int8 = (tiny_run.run_dir / "tflite" / "int8.tflite").stat().st_size / 2**20
    assert int8["size_mib"] < 0.4 * dense_int8
    assert int8["top1"] > 0.6
    model = model_from_checkpoint(load_checkpoint(tiny_run.run_dir / "quant" / "structured50.pt"))
    assert model.conv1.out_channels == 8  # 16 at width 0.25, halved; rebuilt from the checkpoint's tensors


def test_qat_checkpoint_round_trips_with_identical_outputs(tiny_run, tmp_path):
    data = load_data("fashion_mnist", val_size=500, calib_size=64)
    calib = preprocess(data.calibration.images, data.norm, 28)
    parent = load_checkpoint(tiny_run.run_dir / "train" / "best.pt")
    qmodel = nncf_ops.qat_model(model_from_checkpoint(parent), calib)
    fine_tune(qmodel, dataclasses.replace(tiny_run, finetune_subset=512), data, 1, 1e-3)
    qmodel.cpu().eval()
    save_checkpoint({**parent, "qat": nncf_ops.qat_state(qmodel)}, tmp_path / "qat.pt")
    restored = nncf_ops.restore_qat(model_from_checkpoint(parent), load_checkpoint(tmp_path / "qat.pt")["qat"])
    x = torch.from_numpy(calib)
    with torch.no_grad():
        assert torch.equal(restored(x), qmodel(x))


def test_quantize_qat_gives_qdq_onnx_and_int8_tflite(tiny_run):
    cfg = dataclasses.replace(tiny_run, qat=True, qat_epochs=1, finetune_subset=1000, max_int8_drop=3.0)
    rows = {r["artifact"].rsplit("/", 1)[1]: r for r in quantize_stage(cfg)}
    assert {"ptq_int8.onnx", "qat_int8.onnx", "qat_fp32.tflite", "qat_int8.tflite"} <= set(rows)
    assert OnnxRunner(rows["qat_int8.onnx"]["artifact"]).precision == "int8"
    assert all(r["gate"] == "pass" for r in rows.values())


def test_bad_compression_input(tiny_run, capsys):
    base = [f"runs_dir={tiny_run.runs_dir}", f"name={tiny_run.name}"]
    assert main(["prune", *base, "ratio=1.5"]) == 2
    assert "prune ratio=1.5: must be strictly between 0 and 1" in capsys.readouterr().err
    assert main(["prune", *base, "method=structured", "ratio=0"]) == 2
    assert "structured_ratio=0.0: must be strictly between 0 and 1" in capsys.readouterr().err
    assert main(["quantize", *base, "ignored_scope=/layer9/Conv"]) == 2
    err = capsys.readouterr().err
    assert "ignored_scope names ['/layer9/Conv'] match no node; valid names include:" in err and "/conv1/Conv" in err
    assert main(["quantize", *base, "calib_size=60000"]) == 2
    assert "calib_size=60000 exceeds" in capsys.readouterr().err
    with pytest.raises(EdgeError, match="prune method=random"):
        prune_stage(tiny_run, "random")
