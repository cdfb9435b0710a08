"""resnet-edge pipeline: stages from a torch model to verified TFLite files.

The Python API mirrors the verbs, each taking a Config (`pipeline.load_config(path, {"key": "value"})`):
`from pipeline import train, export, convert, quantize, prune, benchmark, report, bundle, run`. Each runs under the
same stage contract as the CLI and is imported on first use, so `import pipeline` stays light (tensorflow, onnx2tf
and nncf load in the stage that needs them).
"""

from importlib import import_module

STAGE_VERBS = ("train", "export", "convert", "quantize", "benchmark", "report", "bundle")


def _stage_verb(name: str):
    def verb(cfg) -> int:
        return import_module("pipeline.run").run_one(name, cfg)

    verb.__name__ = verb.__qualname__ = name
    verb.__doc__ = f"Run the {name} stage of cfg's run (see pipeline/stages.py)."
    return verb


def prune(cfg) -> int:
    """Run the prune stage cfg.prune_method chooses (magnitude or structured)."""
    return import_module("pipeline.run").run_one(f"prune_{cfg.prune_method}", cfg)


def __getattr__(name: str):
    if name in STAGE_VERBS:
        return _stage_verb(name)
    if name == "run":
        return import_module("pipeline.run").run
    if name == "load_config":
        return import_module("pipeline.config").load_config
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
