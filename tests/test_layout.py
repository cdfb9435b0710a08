"""The layout's contract: pipeline/ reads as the chain, with no import cycle and no module past 400 lines; the
device scripts stand alone (they are copied into the bundle); the rows are what the running stages record; one code
style (ruff)."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "quantization", "models")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere (inside functions too, and "pipeline.x:fn" strings)."""
    mods, graph = _modules(), {}
    for name, f in mods.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text())):
            found = []
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                found = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                m = re.fullmatch(r"((?:pipeline|quantization|models)(?:\.\w+)+):\w+", node.value)
                found = [m.group(1)] if m else []
            for t in found:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    targets.add(t)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    graph = import_graph()
    assert "pipeline.stages.convert" in graph["pipeline.chain"]  # the walk sees imports at all
    assert "pipeline.engine.gated" in graph["pipeline.stages.litert"]
    assert cycles(graph) == []
    # the check itself: a module that imports its importer is a cycle
    assert cycles({**graph, "pipeline.core.errors": {"pipeline.chain"}}) != []


def test_no_module_over_400_lines():
    """The product's modules and scripts (the tests aside) each fit in a head."""
    folders = (*PACKAGES, "device_tests", "bench")
    long = {
        str(f.relative_to(ROOT)): n
        for d in folders
        for f in (ROOT / d).rglob("*.py")
        if (n := len(f.read_text().splitlines())) > 400
    }
    assert long == {}


def test_one_code_style():
    """ruff's lint and format, configured in pyproject.toml: a finding fails the suite."""
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert exe, "ruff is not installed: make setup installs requirements.lock"
    lint = subprocess.run([exe, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]
    form = subprocess.run([exe, "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert form.returncode == 0, form.stdout[-3000:]


STYLED = (*PACKAGES, "device_tests", "bench", "tests")  # every folder of Python the project ships or tests with


def test_the_style_check_sees_every_module(tmp_path):
    """ruff's lint and its format check each reach every module: in a copy of the tree (pyproject.toml's settings
    included) with a lint error and a format error planted in every .py file, both name every file. An `exclude`
    in ruff's settings (lint or format) would leave its files unchecked and fail here."""
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    for folder in STYLED:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "fixtures"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    planted = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*.py"))
    assert len(planted) > 100
    for rel in planted:
        with open(tmp_path / rel, "a") as f:
            f.write("\nprobe_value  =  _undefined_probe_name\n")
    lint = subprocess.run(
        [exe, "check", "--no-cache", "--output-format", "concise", "."], cwd=tmp_path, capture_output=True, text=True
    )
    linted = {line.split(":")[0] for line in lint.stdout.splitlines() if "F821" in line}
    form = subprocess.run([exe, "format", "--check", "--no-cache", "."], cwd=tmp_path, capture_output=True, text=True)
    formatted = set(re.findall(r"(?:Would reformat: |--> )([^\s:]+\.py)", form.stdout))
    assert sorted(set(planted) - linted) == [], "outside ruff check"
    assert sorted(set(planted) - formatted) == [], "outside ruff format"


def test_the_layer_contract_holds():
    """lint-imports (import-linter) with pyproject.toml's contracts: cli > compare | run > chain > stages > engine >
    data > config > core; no stage imports another but quantize and prune_* (train's fine-tuning); quantization raises
    our error type and imports nothing else of pipeline/; models/ is pure torch."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed: make setup installs requirements.lock"
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_the_layer_contract_catches_a_lower_layer_importing_a_higher_one(tmp_path):
    """The same contracts over a copy of the tree in which core imports a stage: broken, and named."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    errors = tmp_path / "pipeline" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _late():\n    from ..stages import bundle  # noqa: F401\n")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [exe, "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1 and "BROKEN" in proc.stdout
    assert "pipeline.core.errors -> pipeline.stages.bundle" in proc.stdout


def test_device_scripts_stand_alone():
    """device_tests/ is copied into the bundle and run on a board with numpy and a TFLite runtime: none of its
    scripts imports the project."""
    for f in (ROOT / "device_tests").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            assert not [n for n in names if n.split(".")[0] in PACKAGES], (f.name, names)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"run_litert": "false"},
        {"qat": "true", "run_structured": "false"},
        {"run_magnitude": "false", "structured_ratio": "0.3"},
    ],
)
def test_the_rows_are_what_the_running_stages_record(tmp_path, changes):
    """The run's rows (what report, bundle, benchmark and explain read) are the records of the building stages `run`
    runs for the config, in the chain's order: a switched-off stage has none, and a key that adds files adds rows."""
    from pipeline.chain import context

    ctx = context(load_config(None, {"runs_dir": str(tmp_path), **changes}))
    assert ("tflite/nncf_int8.tflite" in ctx.rows) == ctx.cfg.run_litert
    assert ("quant/qat_int8.onnx" in ctx.rows) == ctx.cfg.qat
    assert any(r.startswith("tflite/structured") for r in ctx.rows) == ctx.cfg.run_structured
    assert any(r.startswith("tflite/pruned") for r in ctx.rows) == ctx.cfg.run_magnitude
    assert ctx.rows[:5] == [
        "onnx/model.onnx",
        "tflite/fp32.tflite",
        "tflite/fp16.tflite",
        "tflite/dynamic_range.tflite",
        "tflite/int8.tflite",
    ]
