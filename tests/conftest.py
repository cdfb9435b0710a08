import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# onnx2tf runs the `onnxsim` program: the venv's bin must be on PATH even when pytest is started by full path.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def fmnist():
    from pipeline.data import load_data

    return load_data("fashion_mnist")


TINY_RUN = {"model": "resnet18", "width": "0.25", "stem": "imagenet", "image_size": "28", "preset": "cpu",
            "batch_size": "128", "train_subset": "6000", "eval_subset": "1000", "epochs": "3", "lr": "0.1",
            "finetune_subset": "2000"}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A briefly trained quarter-width ResNet-18 on real Fashion-MNIST, exported and converted (gates passed)."""
    from pipeline.config import load_config
    from pipeline.convert import convert_stage
    from pipeline.export import export_stage
    from pipeline.train import train

    cfg = load_config(None, {**TINY_RUN, "runs_dir": str(tmp_path_factory.mktemp("runs")), "name": "tiny"})
    train(cfg)
    export_stage(cfg)
    convert_stage(cfg)
    return cfg
