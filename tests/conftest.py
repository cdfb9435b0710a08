import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION_START = time.time()  # before any test ran: what `make setup` made is older
# onnx2tf runs the `onnxsim` program: the venv's bin must be on PATH even when pytest is started by full path.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# pytest-xdist workers share the cores: torch's and OpenMP's thread pools sized to each worker's share, not all of
# them per worker (two workers x two threads on two cores made a training test 3-5x slower). Set before torch loads.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )


def locked(package: str) -> str:
    """A package's version in requirements.lock: what the tests expect instead of literals."""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and name.strip().lower().replace("_", "-") == package.lower().replace("_", "-"):
            return version.strip()
    raise KeyError(package)


def pytest_collection_modifyitems(items):
    """The whole-chain tests first, the rest in their order: each pytest-xdist worker then ends on short tests (one
    worker no longer runs a two-minute chain alone at the end)."""
    items.sort(key=lambda item: item.get_closest_marker("chain") is None)


@pytest.fixture(scope="session")
def fmnist():
    from pipeline.data import load_data

    return load_data("fashion_mnist")


TINY_RUN = {
    "model": "resnet18",
    "width": "0.25",
    "stem": "imagenet",
    "image_size": "28",
    "preset": "cpu",
    "min_steps": "0",
    "batch_size": "128",
    "train_subset": "6000",
    "eval_subset": "1000",
    "epochs": "3",
    "lr": "0.1",
    "finetune_subset": "2000",
    "bundle_table": "false",  # fit's latency pack at 224 px: tests/test_device_table.py makes a small one
}


def built_once(tmp_path_factory, worker_id: str, name: str, build) -> Path:
    """A folder that `build(folder)` fills once per test session, pytest-xdist's workers included: the first worker
    to ask builds it under a lock while the others wait, then everyone reads it (a failed build is tried again by the
    next to ask, and fails there too). For what is costly and never changed by a test."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker_id != "master" else root  # the workers' common folder
    folder, done = root / f"{name}-shared", root / f"{name}-shared.done"
    with open(root / f"{name}-shared.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def shared_run(tmp_path_factory, worker_id: str, name: str, build):
    """For a session fixture to `yield from`: the run <name> that `build(runs_dir)` makes once for the session
    (built_once: the workers share it); its config, and after the session the check that no test changed it (a test
    that writes copies it first: copy_run)."""
    from pipeline.config import load_config

    cfg = load_config(built_once(tmp_path_factory, worker_id, name, build) / name / "config.yaml", {})
    before = snapshot(cfg.run_dir)
    yield cfg
    changed = sorted(set(before.items()) ^ set(snapshot(cfg.run_dir).items()))
    assert not changed, f"a test changed the session's {name} run (copy it first: copy_run): {changed[:5]}"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, worker_id):
    """A briefly trained quarter-width ResNet-18 on real Fashion-MNIST, exported and converted (gates passed), each
    stage run under the stage contract as the verbs run it; what it printed is in TINY_CONSOLE."""
    from pipeline.config import load_config
    from pipeline.run import run_one

    def build(runs: Path) -> None:
        cfg = load_config(None, {**TINY_RUN, "runs_dir": str(runs), "name": "tiny"})
        with console_capture(runs / "fd.txt") as seen:
            for stage in ("train", "export", "convert"):
                assert run_one(stage, cfg) == 0, stage
        (runs / "console.json").write_text(json.dumps(seen))

    for cfg in shared_run(tmp_path_factory, worker_id, "tiny", build):  # one config, then the check after the session
        TINY_CONSOLE.update(json.loads((cfg.run_dir.parent / "console.json").read_text()))
        yield cfg


@pytest.fixture(scope="session")
def litert_run(tiny_run, tmp_path_factory, worker_id):
    """A copy of the tiny run that the litert stage has run on (fp32 and NNCF int8 by litert-torch, gates passed)."""
    from pipeline.run import run_one

    def build(runs: Path) -> None:
        assert run_one("litert", copy_run(tiny_run, runs, "litert")) == 0

    yield from shared_run(tmp_path_factory, worker_id, "litert", build)


def snapshot(folder: Path) -> dict:
    """Every file under a folder with its size and modification time: what a read-only fixture must keep."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


TINY_CONSOLE: dict = {}  # what the tiny run printed: {"ours": Python-level stderr+stdout, "fd": file descriptors 1+2}


@contextlib.contextmanager
def console_capture(fd_file: Path):
    """What a terminal would show, in two parts: Python's sys.stdout/sys.stderr (our lines, and any tool printing at
    the Python level) and file descriptors 1 and 2 (what C++ libraries write past Python)."""
    ours, seen = io.StringIO(), {}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    with open(fd_file, "w") as fds:
        os.dup2(fds.fileno(), 1)
        os.dup2(fds.fileno(), 2)
        try:
            with contextlib.redirect_stdout(ours), contextlib.redirect_stderr(ours):
                yield seen
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
    seen.update(ours=ours.getvalue(), fd=fd_file.read_text())


def copy_run(cfg, tmp_path, name: str, **changes):
    """A copy of a run directory under tmp_path, with its config pointed there (and `changes` applied)."""
    import dataclasses

    from pipeline.config import save_config

    target = dataclasses.replace(cfg, runs_dir=str(tmp_path), name=name, **changes)
    shutil.copytree(cfg.run_dir, target.run_dir)
    save_config(target, target.run_dir / "config.yaml")
    return target


def script_module(path: Path):
    """A script (bench/, device_tests/) loaded as a module, to call its functions in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_script(monkeypatch, name: str):
    """bench/<name>.py as a module, to call its main(argv) in this process (no second interpreter importing torch,
    TensorFlow and NNCF again), with bench/ on sys.path as when the script runs: beside its benchkit."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return script_module(ROOT / "bench" / f"{name}.py")


# --- the board venvs: numpy + one runtime each, nothing of this project ------------------------------------------


def _venv(folder: Path, *requirements: str) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    subprocess.run(
        [
            str(folder / "venv" / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )


@pytest.fixture(scope="session")
def litert_venv(tmp_path_factory, worker_id):
    """A fresh venv with numpy and ai-edge-litert (and their own dependencies) at the locked versions: no torch, no
    tensorflow, not this project. One for the session (workers share it)."""
    folder = built_once(
        tmp_path_factory,
        worker_id,
        "litert-venv",
        lambda f: _venv(f, "-c", str(ROOT / "requirements.lock"), "numpy", "ai-edge-litert"),
    )
    return folder / "venv" / "bin" / "python"


@pytest.fixture(scope="session")
def tflite_runtime_venv(tmp_path_factory, worker_id):
    """The other runtime boards use where ai-edge-litert has no wheel: tflite-runtime 2.14 (numpy 1.x), no
    CompiledModel."""
    folder = built_once(
        tmp_path_factory,
        worker_id,
        "tflite-runtime-venv",
        lambda f: _venv(f, "numpy==1.26.4", "tflite-runtime==2.14.0"),
    )
    return folder / "venv" / "bin" / "python"


# --- the test split judges, it never chooses -----------------------------------------------------------------------

# The functions that may read the test split: each judges a result (or hands the images to a judge), none chooses.
JUDGES = {
    "pipeline/engine/evaluate.py": {"assess"},  # a file's top-1 and gates: what the test split is for
    "pipeline/stages/train/loop.py": {"finish"},  # the trained model's test top-1, once training is over
    "pipeline/stages/bundle.py": {"bundle_stage"},  # eval.npz: the device judges its files on the same images
    "pipeline/engine/context.py": {"eval_set"},  # the set being made (its readers are watched in turn)
    "pipeline/stages/litert.py": {"cross_check"},  # the two fp32 routes' agreement on the test split, reported
    "pipeline/stages/explain.py": {"write_explanation"},  # the report's per-layer error (fallback ranks on training)
}


class _Watched:
    """An object whose attributes `watched` are logged with the stack that read them; everything else passes."""

    def __init__(self, inner, watched: tuple[str, ...], reads: list, what: str) -> None:
        self._inner, self._watched, self._reads, self._what = inner, watched, reads, what

    def __getattr__(self, name):
        if name in self._watched:
            import traceback

            self._reads.append((f"{self._what}.{name}", traceback.extract_stack()[:-1]))
        return getattr(self._inner, name)

    def __len__(self):
        return len(self._inner)


def _judged(stack) -> bool:
    return any(
        f.name in names
        for f in stack
        for path, names in JUDGES.items()
        if f.filename.endswith(path.replace("/", os.sep))
    )


@pytest.fixture
def test_split_watch(monkeypatch):
    """Every read of the test split in this test: the data's test split, the eval set's images and labels. Returns a
    function giving the reads no judge (JUDGES) made, each as `what: caller <- caller's caller ...`: a choice (or a
    check on the way) that looked at the test split."""
    from pipeline.engine.context import Context

    reads: list = []
    data, eval_set = Context.data, Context.eval_set
    monkeypatch.setattr(Context, "data", property(lambda self: _Watched(data.fget(self), ("test",), reads, "data")))
    monkeypatch.setattr(
        Context,
        "eval_set",
        property(lambda self: _Watched(eval_set.__get__(self, Context), ("x", "labels"), reads, "eval_set")),
    )

    def unjudged() -> list[str]:
        return [
            f"{what}: " + " <- ".join(f"{f.name} ({Path(f.filename).name}:{f.lineno})" for f in reversed(stack[-6:]))
            for what, stack in reads
            if not _judged(stack)
        ]

    unjudged.reads = reads
    unjudged.wrap = lambda data: _Watched(data, ("test",), reads, "data")  # data handed over without a Context
    return unjudged
