"""Where and how training runs: device, DDP under torchrun, AMP (bf16 where the CPU has it natively), channels_last,
torch.compile, and on a CPU the centre-tap conv (a 3x3 conv on a 1x1 map as the matrix multiply it is)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ...config import Config
from ...core.errors import EdgeError

try:
    from tqdm import tqdm
except ImportError:  # stock-PyTorch machines: plain per-epoch lines instead of a bar
    tqdm = None


# --- the run -------------------------------------------------------------------------------------------------------


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    amp_dtype: torch.dtype | None  # None: fp32
    channels_last: bool

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: Config) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise EdgeError("device=cuda but torch sees no CUDA device; use device=cpu or device=auto")
    if want_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    amp = None
    if want_cuda and cfg.amp:
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif cfg.amp and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        amp = torch.bfloat16  # oneDNN's native bf16 convolutions; emulated bf16 would be slower than fp32
    if want_cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    # channels_last: with AMP, and on a CPU in fp32 too (ResNet-18 at 32 px on an AVX2 EPYC: 344 vs 263 images/s)
    return Runtime(device, rank, world, amp, cfg.channels_last and (amp is not None or device.type == "cpu"))


class CenterTapConv2d(nn.Conv2d):
    """A Conv2d whose k x k kernel, padded by k // 2, meets a 1 x 1 map: only the centre tap sees data (the others
    multiply the zero padding), so the same output and gradients come from a matrix multiply. On an AVX2 CPU oneDNN's
    backward for ResNet's 512-channel 3x3 convs at 1x1 (layer 4 at 32 px) took 280 ms a batch of 256 against 11 ms."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return super()._conv_forward(x, weight, bias)
        c = self.kernel_size[0] // 2
        return F.linear(x.flatten(1), weight[:, :, c, c], bias)[:, :, None, None]


@contextlib.contextmanager
def center_tap_convs(*models: nn.Module | None, enabled: bool = True):
    """While inside, every Conv2d of `models` that CenterTapConv2d computes exactly (odd square kernel, padding k // 2
    with zeros, no dilation or groups) is one; on the way out they are plain Conv2d again, so what is exported after
    a fine-tune is the model as defined. The state_dict never changes. Yields how many were swapped."""
    swapped = []
    for model in (m for m in models if m is not None and enabled):
        for m in model.modules():
            k = m.kernel_size[0] if type(m) is nn.Conv2d else 0  # NNCF's wrapped convs are left as they are
            if (
                k % 2
                and m.kernel_size == (k, k)
                and m.padding == (k // 2, k // 2)
                and m.dilation == (1, 1)
                and m.groups == 1
                and m.padding_mode == "zeros"
            ):
                m.__class__ = CenterTapConv2d
                swapped.append(m)
    try:
        yield len(swapped)
    finally:
        for m in swapped:
            m.__class__ = nn.Conv2d


def _autocast(rt: Runtime):
    if rt.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(rt.device.type, dtype=rt.amp_dtype)
