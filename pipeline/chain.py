"""Every stage of the chain, declared once: what it needs, the config keys it depends on, what it reads and writes.
`run` reads this table; each single verb runs one row of it through the same wrapper (pipeline.engine.stage.run_stage).
"""

from __future__ import annotations

from pathlib import Path

from .stages.bundle import SCRIPT_NAMES, SCRIPTS
from .config import TRAIN_KEYS, Config
from .stages.convert import VARIANTS
from .core.layout import Layout
from .engine.stage import Stage

# What an evaluation (the test split), a calibration (the training split's subset) and a gate depend on.
EVAL_KEYS = frozenset({"data_source", "data_root", "image_size", "eval_subset", "num_classes", "in_channels"})
CALIB_KEYS = frozenset({"data_source", "data_root", "image_size", "val_size", "calib_size", "seed"})
GATE_KEYS = frozenset({"max_int8_drop", "quant_fallback", "max_float_layers", "explain_images"})  # the gate, and
# what quant_fallback does when an int8 file fails it
FINETUNE_KEYS = frozenset({"batch_size", "optimizer", "momentum", "weight_decay", "label_smoothing", "augment",
                           "finetune_subset", "train_subset", "seed", "device", "val_size", "kd_alpha",
                           "kd_temperature"})
# Keys that change no stage's result: where the run lives, how fast it goes, notes.
NEUTRAL_KEYS = frozenset({"name", "runs_dir", "resume", "threads", "workers", "extra", "preset", "prune_method",
                          "run_structured", "run_magnitude", "amp", "channels_last", "compile"})  # run_litert: a key
# of the prune stages (their outputs depend on it) and the switch of the litert stage


def magnitude_name(cfg: Config) -> str:
    return f"pruned{round(cfg.prune_ratio * 100)}"


def structured_name(cfg: Config) -> str:
    return f"structured{round(cfg.structured_ratio * 100)}"


def _rel(layout: Layout, *paths: Path) -> list[str]:
    return [layout.rel(p) for p in paths]


def _qat_rows(layout: Layout, cfg: Config) -> list[Path]:
    if not cfg.qat:
        return []
    return [layout.quant("qat_int8.onnx"), *_onnx2tf(layout, "qat_"),
            *(_nncf_int8(layout, "qat_nncf_int8") if cfg.run_litert else [])]


def _onnx2tf(layout: Layout, prefix: str = "") -> list[Path]:
    """onnx2tf's files (all four variants, or fp32 and int8 of a compressed model), and the int8 file's repair when
    quant_fallback made one."""
    from .stages.fallback import existing

    files = [layout.tflite(f"{prefix}{v}") for v in (VARIANTS if not prefix else ("fp32", "int8"))]
    return [*files, *existing(layout, layout.tflite(f"{prefix}int8"))]


def _ptq(layout: Layout) -> list[Path]:
    """NNCF's PTQ QDQ ONNX, and its accuracy-controlled repair when quant_fallback made one."""
    from .stages.fallback import existing

    return [layout.quant("ptq_int8.onnx"), *existing(layout, layout.quant("ptq_int8.onnx"))]


def _nncf_int8(layout: Layout, name: str) -> list[Path]:
    """NNCF's PT2E int8 through litert-torch, and its repaired sibling when quant_fallback made one."""
    from .stages.fallback import existing

    return [layout.tflite(name), *existing(layout, layout.tflite(name))]


def _derived(layout: Layout, name: str, cfg: Config) -> list[Path]:
    """The files a compressed checkpoint becomes: its checkpoint and ONNX export (intermediates), then the TFLite
    rows: onnx2tf's fp32 and int8, and NNCF's PT2E int8 through litert-torch."""
    return [layout.quant(f"{name}.pt"), layout.quant(f"{name}.onnx"), *_onnx2tf(layout, f"{name}_"),
            *(_nncf_int8(layout, f"{name}_nncf_int8") if cfg.run_litert else [])]


def _weights_file(layout: Layout, cfg: Config) -> list[str]:
    return [str(Path(cfg.weights).resolve())] if cfg.weights and Path(cfg.weights).is_file() else []


def _structured(layout: Layout, cfg: Config) -> list[Path]:
    return _derived(layout, structured_name(cfg), cfg)


def _magnitude(layout: Layout, cfg: Config) -> list[Path]:
    return _derived(layout, magnitude_name(cfg), cfg)


def _declared_rows(layout: Layout, cfg: Config) -> list[str]:
    return [rel for stage in stages_for(cfg) if stage.builds() for rel in stage.records(layout, cfg)]


def _report_inputs(layout: Layout, cfg: Config) -> list[str]:
    extra = sorted(layout.device_dir.glob("*.json")) + sorted(layout.companion("latency").glob("latency_*.json"))
    return ([layout.rel(layout.record(rel)) for rel in _declared_rows(layout, cfg)] + _rel(layout, layout.best)
            + [rel for rel in map(layout.rel, map(layout.explanation, _declared_rows(layout, cfg)))
               if layout.path(rel).is_file()]
            + [str(p.resolve()) for p in extra])  # absolute: the latency tables live beside the run


def _explain_inputs(layout: Layout, cfg: Config) -> list[str]:
    from .stages.explain import explained_rows

    return [spec for rel in explained_rows(layout, cfg) for spec in (rel, f"{layout.rel(layout.record(rel))}#build")]


def _explain_outputs(layout: Layout, cfg: Config) -> list[str]:
    from .stages.explain import explained_rows

    return [layout.rel(layout.explanation(rel)) for rel in explained_rows(layout, cfg)]


def _bundle_candidates(layout: Layout, cfg: Config) -> list[str]:
    from .stages.bundle import candidates

    return candidates(layout, cfg, _declared_rows(layout, cfg))


def _bundle_inputs(layout: Layout, cfg: Config) -> list[str]:
    chosen = _bundle_candidates(layout, cfg)
    return chosen + [f"{layout.rel(layout.record(rel))}#build,gates" for rel in chosen] + \
        [str(SCRIPTS / name) for name in SCRIPT_NAMES]


def _bundle_outputs(layout: Layout, cfg: Config) -> list[str]:
    from .stages.bundle import chosen

    files = ["eval.npz", "expected.json", "README.md", *SCRIPT_NAMES]
    return [layout.rel(layout.bundle_dir / f) for f in files] + \
        [layout.rel(layout.bundle_dir / "models" / Path(rel).name) for rel in chosen(layout, cfg)]


STAGES = {s.name: s for s in [
    Stage("train", "pipeline.stages.train:train_stage", needs=(), keys=TRAIN_KEYS, inputs=_weights_file,
          outputs=lambda la, c: _rel(la, la.best, la.last, la.metrics), sections=()),
    Stage("export", "pipeline.stages.export:export_stage", needs=("train",), keys=EVAL_KEYS | {"dynamic_batch"},
          inputs=lambda la, c: _rel(la, la.best), outputs=lambda la, c: _rel(la, la.onnx),
          records=lambda la, c: _rel(la, la.onnx)),
    Stage("convert", "pipeline.stages.convert:convert_stage", needs=("export",), keys=EVAL_KEYS | CALIB_KEYS | GATE_KEYS,
          inputs=lambda la, c: _rel(la, la.onnx), outputs=lambda la, c: _rel(la, *_onnx2tf(la)),
          records=lambda la, c: _rel(la, *_onnx2tf(la))),
    Stage("litert", "pipeline.stages.litert:litert_stage", needs=("export",), keys=EVAL_KEYS | CALIB_KEYS | GATE_KEYS
          | {"pt2e_algorithm"}, inputs=lambda la, c: _rel(la, la.best, la.onnx, la.tflite("fp32")),
          outputs=lambda la, c: _rel(la, la.tflite("fp32_litert"), *_nncf_int8(la, "nncf_int8")),
          records=lambda la, c: _rel(la, la.tflite("fp32_litert"), *_nncf_int8(la, "nncf_int8"))),
    Stage("quantize", "pipeline.stages.compress:quantize_stage", needs=("export",),
          keys=EVAL_KEYS | CALIB_KEYS | GATE_KEYS | FINETUNE_KEYS | {"quant_preset", "ignored_scope", "qat",
                                                                     "qat_epochs", "qat_lr", "pt2e_algorithm",
                                                                     "run_litert"},
          inputs=lambda la, c: _rel(la, la.onnx, la.best),
          outputs=lambda la, c: _rel(la, *_ptq(la), *_qat_rows(la, c), *(
              [la.quant("qat_nncf.pt"), la.quant("qat.pt"), la.quant("qat.onnx")] if c.qat else [])),
          records=lambda la, c: _rel(la, *_ptq(la), *_qat_rows(la, c))),
    Stage("prune_structured", "pipeline.stages.compress:prune_structured_stage", needs=("export",),
          keys=EVAL_KEYS | CALIB_KEYS | GATE_KEYS | FINETUNE_KEYS | {"structured_ratio", "structured_importance", "structured_round_to",
                                                                     "structured_steps",
                                                                     "structured_epochs", "structured_lr",
                                                                     "pt2e_algorithm", "run_litert"},
          inputs=lambda la, c: _rel(la, la.onnx, la.best), outputs=lambda la, c: _rel(la, *_structured(la, c)),
          records=lambda la, c: _rel(la, *_structured(la, c)[2:])),
    Stage("prune_magnitude", "pipeline.stages.compress:prune_magnitude_stage", needs=("export",),
          keys=EVAL_KEYS | CALIB_KEYS | GATE_KEYS | FINETUNE_KEYS | {"prune_ratio", "prune_epochs", "prune_lr",
                                                                     "pt2e_algorithm", "run_litert"},
          inputs=lambda la, c: _rel(la, la.onnx, la.best), outputs=lambda la, c: _rel(la, *_magnitude(la, c)),
          records=lambda la, c: _rel(la, *_magnitude(la, c)[2:])),
    Stage("explain", "pipeline.stages.explain:explain_stage", needs=("convert",), keys=EVAL_KEYS | {"explain_images"},
          inputs=lambda la, c: _explain_inputs(la, c), outputs=lambda la, c: _explain_outputs(la, c), sections=()),
    Stage("benchmark", "pipeline.stages.benchmark:benchmark_stage", needs=("export",),
          keys=frozenset({"bench_runs", "bench_warmup", "bench_threads", "image_size", "in_channels",
                          "data_source"}),
          inputs=lambda la, c: _declared_rows(la, c), records=_declared_rows, sections=("benchmark",),
          uses_data=False),
    Stage("report", "pipeline.stages.report:report_stage", needs=(), keys=frozenset({"max_size_mib"}),
          inputs=_report_inputs, sections=(), uses_data=False,
          outputs=lambda la, c: _rel(la, *(la.report_dir / f for f in ("report.json", "report.md", "report.html",
                                                                        "pareto.png", "layers.png", "latency.png", "memory.png")))),
    Stage("bundle", "pipeline.stages.bundle:bundle_stage", needs=("convert",),
          keys=EVAL_KEYS | {"bundle_models", "bundle_images", "bench_runs", "bench_warmup"}, inputs=_bundle_inputs, outputs=_bundle_outputs,
          sections=()),
]}


def stages_for(cfg: Config) -> list[Stage]:
    """The chain `run` runs for this config, in order."""
    skip = {"prune_structured": not cfg.run_structured, "prune_magnitude": not cfg.run_magnitude,
            "litert": not cfg.run_litert}
    return [s for name, s in STAGES.items() if not skip.get(name)]


def declared_rows(layout: Layout, cfg: Config) -> list[str]:
    """The artifacts the run's stages make: exactly the report's rows."""
    return _declared_rows(layout, cfg)
