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
