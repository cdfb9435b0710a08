"""int8 quantization and pruning (NNCF, torch-pruning). The only package that imports nncf.

NNCF compiles its torch CPU extension (ninja, C++) on first use and loads it from torch's extension folder, by
default one per user (~/.cache/torch_extensions): a second checkout's venv rewrites the build file there with its own
include paths, and the next process of the first checkout compiles it all again (19 s on 2 cores with another one
waiting, a minute alone). Here it lives in the venv (`<venv>/torch_extensions`, built by `make setup`), one per venv,
unless the user named one (TORCH_EXTENSIONS_DIR) or runs without a venv. And the build gets ten minutes, not NNCF's
60 s default (a fresh, busy 2-core machine took longer and the quantize stage failed), unless the user set their own.

torch builds it with whichever `ninja` comes first on PATH, and two ninjas do not share a build log: Debian's
ninja-build 1.11 (/usr/bin/ninja) and the locked ninja 1.13 (the venv's) each find no entry of theirs in the other's
.ninja_log and compile everything again (40 s each time on 2 cores). A process started without the venv's bin on PATH
(`.venv/bin/resnet-edge` from a plain shell) made the next one that had it recompile. So the venv's ninja comes first.
"""

import os
import sys

if sys.prefix != sys.base_prefix:
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    _bin = os.path.join(sys.prefix, "bin")
    _path = os.environ.get("PATH", "").split(os.pathsep)
    if os.path.isfile(os.path.join(_bin, "ninja")) and _path[:1] != [_bin]:
        os.environ["PATH"] = os.pathsep.join([_bin, *(p for p in _path if p != _bin)])
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")
