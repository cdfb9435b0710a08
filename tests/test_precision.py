"""One precision rule, read from the file: the pipeline's copy (pipeline/core/precision.py) and the device scripts' copy
(device_tests/tflite_precision.py, used by bench_tflite.py and android_benchmark.py) give the same answers on the
same files, whatever the files are called."""

import shutil

import pytest
from conftest import ROOT, script_module

from pipeline.core.precision import onnx_precision, precision_of, tflite_precision


def _device_copy():
    return script_module(ROOT / "device_tests" / "tflite_precision.py")


@pytest.fixture(scope="module")
def misnamed(tiny_run, tmp_path_factory):
    """The tiny run's four TFLite files under names that say the opposite of what they hold."""
    folder = tmp_path_factory.mktemp("misnamed")
    names = {
        "fp32": "model_int8.tflite",
        "fp16": "full_integer_quant.tflite",
        "dynamic_range": "fp32.tflite",
        "int8": "float32_fp16.tflite",
    }
    for variant, name in names.items():
        shutil.copyfile(tiny_run.run_dir / "tflite" / f"{variant}.tflite", folder / name)
    return {folder / name: variant for variant, name in names.items()}


def test_every_copy_reads_the_same_precision_from_the_file(misnamed):
    device = _device_copy()
    for path, truth in misnamed.items():
        assert tflite_precision(path) == truth, path.name
        assert device.tflite_precision(str(path)) == truth, path.name
        assert precision_of(path) == truth


def test_board_and_phone_scripts_use_the_same_rule(misnamed):
    import sys

    sys.path.insert(0, str(ROOT / "device_tests"))
    try:
        import android_benchmark  # noqa: F401  (imports the rule, as in the bundle)
        import bench_rows
    finally:
        sys.path.remove(str(ROOT / "device_tests"))
    for path, truth in misnamed.items():
        assert bench_rows.precision(str(path)) == truth
        assert android_benchmark.tflite_precision(str(path)) == truth


def test_onnx_precision_from_the_graph(tiny_run, tmp_path):
    from conftest import copy_run

    from pipeline.run import run_one

    assert onnx_precision(tiny_run.run_dir / "onnx" / "model.onnx") == "fp32"
    cfg = copy_run(tiny_run, tmp_path, "q", run_structured=False, run_magnitude=False)
    run_one("quantize", cfg)
    shutil.copyfile(cfg.run_dir / "quant" / "ptq_int8.onnx", tmp_path / "fp32_model.onnx")
    assert onnx_precision(tmp_path / "fp32_model.onnx") == "int8"


def test_not_a_tflite_file_is_named(tmp_path):
    from pipeline.core.errors import EdgeError

    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"\0" * 64)
    with pytest.raises(EdgeError, match="not a TFLite flatbuffer"):
        tflite_precision(bad)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        _device_copy().tflite_precision(str(bad))


def test_the_int8_phone_file_rule():
    """One rule for the size gate, the recommended file, compare's pick and explain's rows."""
    from pipeline.core.precision import is_int8_tflite

    assert is_int8_tflite("tflite", "int8") and is_int8_tflite("tflite", "mixed")
    assert not any(
        is_int8_tflite(f, p)
        for f, p in (
            ("onnx", "int8"),
            ("tflite", "dynamic_range"),
            ("tflite", "fp32"),
            ("tflite", "fp16"),
            (None, None),
        )
    )
