"""resnet-edge pipeline: stages from a torch model to verified TFLite files.

The Python API mirrors the verbs: `from pipeline import train, export, convert, evaluate, benchmark, report, run`.
Each is imported on first use, so `import pipeline` stays light (tensorflow, onnx2tf and nncf load in their stage).
"""

from importlib import import_module

_API = {
    "train": ("pipeline.train", "train"),
    "export": ("pipeline.export", "export_stage"),
    "convert": ("pipeline.convert", "convert_stage"),
    "evaluate": ("pipeline.evaluate", "evaluate"),
    "benchmark": ("pipeline.benchmark", "benchmark"),
    "report": ("pipeline.report", "report"),
    "bundle": ("pipeline.bundle", "bundle"),
    "run": ("pipeline.run", "run"),
    "quantize": ("quantization.stages", "quantize_stage"),
    "prune": ("quantization.stages", "prune_stage"),
    "load_config": ("pipeline.config", "load_config"),
}


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    module, attr = _API[name]
    return getattr(import_module(module), attr)
