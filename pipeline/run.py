"""`resnet-edge run`: every stage into runs/<name>/, recorded in manifest.json (resolved config, versions, host,
per-stage wall time, every artifact with bytes and sha256). A stage whose config and inputs are unchanged is skipped
(force=true redoes it); an interrupted run continues after its last completed stage. Gate failures do not stop the
chain: the report is written, then run exits non-zero naming each failure."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .artifacts import atomic_write_json
from .bundle import SCRIPT_NAMES, SCRIPTS, bundle
from .config import TRAIN_KEYS, Config, save_config
from .data import input_shape
from .errors import EdgeError

# Config keys that do not change what a stage produces.
NEUTRAL_KEYS = {"name", "runs_dir", "resume", "threads", "workers", "extra", "force"}
# Keys that matter to one stage alone (later stages see the change through that stage's files).
STAGE_ONLY_KEYS = {"bench_runs": "benchmark", "max_size_mib": "report", "bundle_models": "bundle",
                   "bundle_images": "bundle"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(run: Path) -> dict[str, float]:
    return {str(p.relative_to(run)): p.stat().st_mtime for p in run.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.name != "manifest.json"}


def _stages(cfg: Config) -> list[tuple[str, Callable[[Config], object], list[str]]]:
    """(name, function of the config, input files relative to the run or absolute) in order."""
    from . import convert, export, train

    def quantize(c):
        from quantization.stages import quantize_stage

        return quantize_stage(c)

    def prune(method):
        def stage(c):
            from quantization.stages import prune_stage

            return prune_stage(c, method)
        return stage

    def bench(c):
        from .benchmark import benchmark

        run = c.run_dir
        arts = sorted(run.glob("tflite/*.tflite")) + [p for p in (run / "onnx" / "model.onnx",
                                                                   run / "quant" / "ptq_int8.onnx") if p.is_file()]
        return benchmark(arts, input_shape(c), run / "bench", None, 10, c.bench_runs)

    def report(c):
        from .report import report_run

        return report_run(c)

    stages = [("train", lambda c: train.train(c), []),
              ("export", export.export_stage, ["train/best.pt"]),
              ("convert", convert.convert_stage, ["onnx/model.onnx"]),
              ("quantize", quantize, ["onnx/model.onnx", "train/best.pt"])]
    if cfg.run_structured:
        stages.append(("prune_structured", prune("structured"), ["train/best.pt", "onnx/model.onnx"]))
    if cfg.run_magnitude:
        stages.append(("prune_magnitude", prune("magnitude"), ["train/best.pt", "onnx/model.onnx"]))
    stages += [("benchmark", bench, ["tflite"]), ("report", report, ["eval", "bench"]),
               ("bundle", bundle, ["tflite", *BUNDLE_SCRIPTS])]
    return stages


# The bundle copies these: a new version of them makes a new bundle.
BUNDLE_SCRIPTS = [str(SCRIPTS / name) for name in SCRIPT_NAMES]


def _key(cfg: Config, stage: str, inputs: list[str]) -> str:
    conf = {k: v for k, v in cfg.to_dict().items()
            if (k in TRAIN_KEYS if stage == "train" else k not in NEUTRAL_KEYS)
            and STAGE_ONLY_KEYS.get(k, stage) == stage}
    digests = []
    for rel in inputs:
        path = cfg.run_dir / rel
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        digests += [(str(p.relative_to(cfg.run_dir)) if p.is_relative_to(cfg.run_dir) else p.name, sha256(p))
                    for p in files if p.is_file() and not p.name.startswith(".")]
    return hashlib.sha256(json.dumps([stage, conf, digests], sort_keys=True, default=str).encode()).hexdigest()


def run(cfg: Config, force: bool = False) -> dict:
    from .benchmark import host
    from .report import versions

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.update({"config": cfg.to_dict(), "versions": versions(), "host": host()})
    manifest.setdefault("stages", {})
    manifest.setdefault("artifacts", {})
    failures = []
    for name, function, inputs in _stages(cfg):
        key = _key(cfg, name, inputs)
        done = manifest["stages"].get(name, {})
        outputs_ok = all((run_dir / rel).is_file() for rel in done.get("outputs", []))
        if not force and done.get("key") == key and done.get("status") == "ok" and outputs_ok:
            print(f"run: {name} unchanged, skipped", file=sys.stderr)
            continue
        before, start = _files(run_dir), time.perf_counter()
        status, error = "ok", None
        manifest["stages"][name] = {"key": key, "status": "started"}
        atomic_write_json(manifest_path, manifest)
        print(f"run: {name} ...", file=sys.stderr)
        try:
            function(cfg if name != "train" else _fresh_train(cfg, done, key))
        except EdgeError as e:
            status, error = "failed", str(e)
            failures.append(f"{name}: {e}")
            print(f"run: {name} failed: {e}", file=sys.stderr)
        after = _files(run_dir)
        outputs = sorted(rel for rel, mtime in after.items() if before.get(rel) != mtime)
        for rel in outputs:
            p = run_dir / rel
            manifest["artifacts"][rel] = {"bytes": p.stat().st_size, "sha256": sha256(p), "stage": name}
        manifest["stages"][name] = {"key": key, "status": status, "error": error, "outputs": outputs,
                                    "wall_s": round(time.perf_counter() - start, 2)}
        atomic_write_json(manifest_path, manifest)  # after every stage: an interruption keeps what is done
    manifest["failures"] = failures
    atomic_write_json(manifest_path, manifest)
    total = sum(s.get("wall_s", 0) for s in manifest["stages"].values())
    print(f"run {'ok' if not failures else 'FAILED'}: {run_dir} (stage time {total:.0f} s)", file=sys.stderr)
    if failures:
        raise EdgeError("run failed: " + " | ".join(failures))
    return manifest


def _fresh_train(cfg: Config, done: dict, key: str) -> Config:
    """An interrupted training continues from last.pt when the stage was started with the same key."""
    import dataclasses

    last = cfg.run_dir / "train" / "last.pt"
    if done.get("key") == key and done.get("status") == "started" and last.is_file():
        return dataclasses.replace(cfg, resume=True)
    return cfg
