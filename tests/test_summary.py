import json

import pytest
import torch

from models import build_model
from pipeline.cli import main
from pipeline.engine.summary import peak_live_bytes, summarize


def test_resnet50_table_matches_the_paper():
    s = summarize(build_model("resnet50"), "resnet50", 224)
    assert [r.stage for r in s.rows] == ["conv1", "maxpool", "conv2_x", "conv3_x", "conv4_x", "conv5_x", "pool+fc"]
    assert [r.output for r in s.rows] == [
        "112x112x64",
        "56x56x64",
        "56x56x256",
        "28x28x512",
        "14x14x1024",
        "7x7x2048",
        "1000",
    ]
    assert [r.blocks for r in s.rows[2:6]] == [3, 4, 6, 3]
    assert s.rows[2].filters == "1x1,64 3x3,64 1x1,256"
    assert s.params == 25_557_032 == sum(r.params for r in s.rows)
    assert round(s.macs / 1e9, 2) == 4.09
    assert s.rows[0].act_mib_fp32 == pytest.approx(112 * 112 * 64 * 4 / 2**20)
    assert s.rows[0].act_mib_int8 == pytest.approx(112 * 112 * 64 / 2**20)


def test_resnet18_totals():
    s = summarize(build_model("resnet18"), "resnet18", 224)
    assert round(s.macs / 1e9, 2) == 1.81
    assert s.weights_mib_fp32 == pytest.approx(11_689_512 * 4 / 2**20)
    # peak: conv1's 112x112x64 output while its 224x224x3 input is still live
    assert s.peak_act_mib_fp32 == pytest.approx((112 * 112 * 64 + 224 * 224 * 3) * 4 / 2**20, rel=0.06)
    assert s.peak_act_mib_int8 == pytest.approx(s.peak_act_mib_fp32 / 4)


def test_peak_live_counts_the_residual_branch():
    block = build_model("resnet18").layer1[0].eval()
    x = torch.zeros(1, 64, 8, 8)
    one = 64 * 8 * 8 * 4
    # input (kept for the skip) + conv1 out + conv2 out; BN/ReLU and the add reuse buffers
    assert peak_live_bytes(block, x, 4) == 3 * one


def test_summary_cli_md_and_json(capsys):
    assert main(["summary", "resnet18", "image_size=28", "in_channels=1", "num_classes=10", "stem=small"]) == 0
    out = capsys.readouterr().out
    assert "| conv2_x | 28x28x64 |" in out and "GMACs" in out
    assert main(["summary", "mobilenet_v2", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 3_504_872 and data["rows"][-1]["output"] == "1000"


def test_summary_cli_bad_input_is_one_line(capsys):
    assert main(["summary", "resnet18", "depth=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key 'depth'") and err.count("\n") == 1
    assert main(["summary", "resnet18", "shortcut=C"]) == 2
    assert "shortcut must be 'A' or 'B'" in capsys.readouterr().err
