"""resnet-edge pipeline: stages from a torch model to verified TFLite files.

The Python API mirrors the verbs, each taking a Config (`pipeline.load_config(path, {"key": "value"})`): every stage
of the chain (pipeline.chain) is a function of its name, `pipeline.train(cfg)` ... `pipeline.bundle(cfg)`, run under
the same stage contract as the CLI; `pipeline.prune(cfg)` runs the prune stage cfg.prune_method chooses, and
`pipeline.run(cfg)` the whole chain. Imported on first use, so `import pipeline` stays light (tensorflow, onnx2tf
and nncf load in the stage that needs them).
"""

import pkgutil
from importlib import import_module

_SUBMODULES = {m.name for m in pkgutil.iter_modules(__path__)}


def _stage_verb(stage):
    def verb(cfg) -> int:
        return import_module("pipeline.run").run_one(stage.name, cfg)

    verb.__name__ = verb.__qualname__ = stage.name
    verb.__doc__ = f"Run the {stage.name} stage of cfg's run: {stage.help}."
    return verb


def prune(cfg) -> int:
    """Run the prune stage cfg.prune_method chooses (magnitude or structured)."""
    return import_module("pipeline.run").run_one(f"prune_{cfg.prune_method}", cfg)


def __getattr__(name: str):
    if name == "run":
        return import_module("pipeline.run").run
    if name == "load_config":
        return import_module("pipeline.config").load_config
    if not name.startswith("_") and name not in _SUBMODULES:  # `from pipeline import cli` must not load the chain
        stage = import_module("pipeline.chain").stages().get(name)
        if stage is not None:
            return _stage_verb(stage)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "run", "load_config", *import_module("pipeline.chain").stages()])
