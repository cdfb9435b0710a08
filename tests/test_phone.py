"""preset=phone: ImageNet-size input (224x224 RGB, 1000 classes) from a torchvision weights file, no training."""

import json

import numpy as np
import pytest
import torch

from models import build_model
from pipeline.cli import main
from pipeline.core.errors import EdgeError
from pipeline.engine.checkpoint import load_checkpoint, resolve_weights

WNIDS = ["n01440764", "n01443537"]  # ImageNet's first two synsets: class indices 0 and 1 in torchvision's order


def coloured(fmnist, offset: int, label: int, i: int) -> np.ndarray:
    """A real Fashion-MNIST picture drawn mostly in red (class 0) or in blue (class 1): uint8 HWC RGB. Colour is the
    class, so a red/blue (RGB/BGR) swap anywhere between the PNG and the model turns every answer."""
    pixels = fmnist.test.images[offset + 2 * i + label][..., 0]
    rgb = np.stack([pixels // 5, pixels // 3, pixels // 5], -1)  # dim everywhere: no channel constant
    rgb[..., 2 * label] = pixels
    return rgb


def image_folder(root, fmnist, per_class):
    """Those pictures as RGB PNG files in ImageNet's folder layout (train/ and val/)."""
    from PIL import Image

    for split, offset in (("train", 0), ("val", 1000)):
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(coloured(fmnist, offset, label, i)).save(folder / f"{i}.png")
    return root


def fitted_weights(fmnist, per_class: int) -> dict:
    """A torchvision-layout ResNet-18 state_dict that tells the two colours apart: random convolutions and a
    nearest-class-mean fc over their features, fitted here on the training pictures decoded and normalised by this
    test's own code (PIL, ImageNet's mean and std), not the pipeline's: classes 2..999 never win."""
    from PIL import Image

    torch.manual_seed(1)
    model = build_model("resnet18", num_classes=1000).eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    feats = []
    for label in (0, 1):
        x = np.stack(
            [np.asarray(Image.fromarray(coloured(fmnist, 0, label, i)).resize((224, 224))) for i in range(per_class)]
        )
        x = ((torch.from_numpy(x).float() / 255 - mean) / std).permute(0, 3, 1, 2)
        with torch.no_grad():
            feats.append(torch.flatten(model.avgpool(model.forward_features(x)), 1).mean(0))
    state = model.state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.full((1000,), -100.0)
    middle, d = (feats[0] + feats[1]) / 2, (feats[0] - feats[1]) / 2
    scale = 10 / (d * d).sum()  # logits +-10 at the class means, of a size the parity gates measure against
    for label, sign in ((0, 1), (1, -1)):  # logit = +-(f - middle).d: the nearer class mean wins
        state["fc.weight"][label], state["fc.bias"][label] = sign * scale * d, -sign * scale * (middle * d).sum()
    return state


@pytest.mark.chain
def test_phone_preset_runs_torchvision_weights_at_224(tmp_path, fmnist, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # weights=torchvision reads torch's hub cache
    state = fitted_weights(fmnist, per_class=6)  # torchvision's keys and shapes
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    folder = image_folder(tmp_path / "imagenet", fmnist, per_class=6)

    args = [
        "run",
        "preset=phone",
        "weights=torchvision",
        f"data_root={folder}",
        "calib_size=8",
        "bench_runs=3",
        "bundle_models=fp32,int8",
        "bundle_table=false",  # fit's latency pack (two 224 px conversions, 700 ops): tests/test_device_table.py
        f"runs_dir={tmp_path / 'runs'}",
        "name=phone",
    ]
    assert main(args) == 0
    run = tmp_path / "runs" / "phone"
    manifest = json.loads((run / "manifest.json").read_text())
    cfg = manifest["config"]
    assert (cfg["image_size"], cfg["num_classes"], cfg["in_channels"], cfg["epochs"]) == (224, 1000, 3, 0)
    assert list(manifest["stages"]) == [
        "train",
        "export",
        "convert",
        "litert",
        "quantize",
        "explain",
        "benchmark",
        "report",
        "bundle",
    ]

    best = load_checkpoint(run / "train" / "best.pt")
    assert best["epoch"] == 0 and best["model_options"]["num_classes"] == 1000
    assert all(torch.equal(best["model"][k], v) for k, v in state.items())  # the weights, untouched
    metrics = json.loads((run / "train" / "metrics.json").read_text())
    assert metrics["test_images"] == 12 and metrics["train_wall_s"] == 0.0

    bench = json.loads((run / "results" / "tflite" / "int8.tflite.json").read_text())["benchmark"]
    assert bench["input_shape"] == [1, 3, 224, 224] and bench["threads"]["1"]["latency_ms_median"] > 0
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(run / "tflite" / "int8.tflite"))
    assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 224, 224, 3]
    assert interpreter.get_output_details()[0]["shape"].tolist() == [1, 1000]
    rows = {r["artifact"]: r for r in json.loads((run / "report" / "report.json").read_text())["rows"]}
    assert rows["tflite/fp32.tflite"]["size_mib"] > 40 and rows["tflite/int8.tflite"]["size_mib"] < 12
    assert rows["tflite/fp32.tflite"]["agreement"] == 1.0 and rows["tflite/fp32.tflite"]["images"] == 12
    assert {r["status"] for r in rows.values()} == {"pass"}  # every default gate
    # the colour is the class: every file, fp32 to int8, tells red from blue on all 12 unseen pictures (a red/blue
    # swap in decoding, resizing or the NHWC layout would score 0%)
    assert {a: r["top1"] for a, r in rows.items()} == {a: 1.0 for a in rows} and len(rows) == 8
    data = np.load(run / "device_bundle" / "eval.npz")
    assert data["x"].shape == (12, 224, 224, 3) and data["mean"].tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_weights_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(EdgeError, match="torchvision publishes none for resnet9"):
        resolve_weights("torchvision", "resnet9")
    assert resolve_weights("w.pth", "resnet18").name == "w.pth"
    assert (
        main(["train", "epochs=0", "train_subset=600", "eval_subset=100", "val_size=100", f"runs_dir={tmp_path}"]) == 2
    )
    assert capsys.readouterr().err == (
        "error: epochs=0 skips training and needs weights=PATH (a torchvision state_dict) or weights=torchvision\n"
    )  # at the door: one line
    assert not (tmp_path / "default" / "train" / "best.pt").exists()
