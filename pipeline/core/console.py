"""Where output goes. Our own lines (one per stage, training epochs, tqdm bars on a terminal) go to the console; while
a stage runs, every tool's own output (onnx2tf, TensorFlow and absl, litert-torch, NNCF, torch's exporters), Python's
and the C++ libraries' alike, goes to runs/<name>/logs/<stage>.log. `--verbose` (RESNET_EDGE_VERBOSE=1) lets it
through to the console instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

_console = None  # the console's stream while a stage's tool output is captured
VERBOSE = False  # set by the command line's --verbose


def verbose() -> bool:
    return VERBOSE or os.environ.get("RESNET_EDGE_VERBOSE") == "1"


def err():
    """The stream our own lines and progress bars go to: the console, also while tool output is captured."""
    return _console or sys.stderr


def _real_fd(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, StringIO: no descriptor of their own
        return None


@contextlib.contextmanager
def tool_output_to(log: Path):
    """Send stdout and stderr, both Python's streams and file descriptors 1 and 2 (what C++ libraries write to), to
    `log` (appended) for the duration; err() stays the console. As is when verbose or already capturing."""
    global _console
    if _console is not None or verbose():
        yield None
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    console, own = sys.stderr, None
    if _real_fd(sys.stderr) in (1, 2):  # the console is descriptor 2 itself: keep a copy that stays the console
        own = console = os.fdopen(os.dup(_real_fd(sys.stderr)), "w", buffering=1)
    saved = os.dup(1), os.dup(2)
    out = open(log, "a", buffering=1)  # noqa: SIM115  (closed below, after the descriptors are restored)
    streams = sys.stdout, sys.stderr
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = out
        _console = console
        yield log
    finally:
        for stream in (sys.stdout, sys.stderr, out):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = streams
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        _console = None
        if own is not None:
            own.close()
        out.close()
