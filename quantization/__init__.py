"""int8 quantization and pruning (NNCF, torch-pruning). The only package that imports nncf.

NNCF compiles its torch CPU extension (ninja, C++) on first use and loads it from torch's extension folder, by
default one per user (~/.cache/torch_extensions): a second checkout's venv rewrites the build file there with its own
include paths, and the next process of the first checkout compiles it all again (19 s on 2 cores with another one
waiting, a minute alone). Here it lives in the venv (`<venv>/torch_extensions`, built by `make setup`), one per venv,
unless the user named one (TORCH_EXTENSIONS_DIR) or runs without a venv. And the build gets ten minutes, not NNCF's
60 s default (a fresh, busy 2-core machine took longer and the quantize stage failed), unless the user set their own.
"""

import os
import sys

if sys.prefix != sys.base_prefix:
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "600")
