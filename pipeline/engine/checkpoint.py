"""Checkpoints and weight files: written atomically, read with torch.load(weights_only=True) only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core.artifacts import atomic_write
from ..core.errors import EdgeError

CHECKPOINT_FORMAT = "resnet-edge-checkpoint-v1"
CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def save_checkpoint(ckpt: dict, path: Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def _load(path: Path):
    if not Path(path).is_file():
        raise EdgeError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holds objects weights_only refuses
        reason = str(e).strip().splitlines()[0][:160]
        raise EdgeError(f"{path}: not a readable torch weights file ({e.__class__.__name__}: {reason})") from e


def load_checkpoint(path: Path) -> dict:
    ckpt = _load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise EdgeError(
            f"{path}: not a resnet-edge training checkpoint (no format={CHECKPOINT_FORMAT!r}); "
            f"pass a plain state_dict as weights= instead"
        )
    return ckpt


# torchvision's ImageNet weights (IMAGENET1K_V1) for the models whose state_dict layout ours matches.
TORCHVISION_WEIGHTS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
    "mobilenet_v2": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}


def resolve_weights(spec: str, model_name: str) -> Path:
    """weights=PATH as is; weights=torchvision: torchvision's file for the model in torch's hub cache
    ($TORCH_HOME/hub/checkpoints), downloaded there once when absent. Loading stays weights_only either way."""
    if spec != "torchvision":
        return Path(spec)
    if model_name not in TORCHVISION_WEIGHTS:
        raise EdgeError(
            f"weights=torchvision: torchvision publishes none for {model_name}; "
            f"choose {', '.join(TORCHVISION_WEIGHTS)} or pass weights=PATH"
        )
    url = TORCHVISION_WEIGHTS[model_name]
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=path.stem.rsplit("-", 1)[1])
        except Exception as e:  # offline, proxy, hash mismatch
            raise EdgeError(
                f"weights=torchvision: cannot download {url} ({e.__class__.__name__}); fetch it on a "
                f"connected machine and pass weights=/path/{path.name} (or put it in {path.parent})"
            ) from e
    return path


def load_weights(model: nn.Module, path: Path) -> list[str]:
    """Fine-tuning start: a torchvision-format state_dict (or a resnet-edge checkpoint). Loads strictly, except that a
    classifier whose class count differs is left freshly initialised; returns lines saying what was done."""
    sd = _load(path)
    if isinstance(sd, dict) and sd.get("format") == CHECKPOINT_FORMAT:
        sd = sd["model"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise EdgeError(f"{path}: expected a state_dict (parameter name -> tensor)")
    own = model.state_dict()
    notes = []
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise EdgeError(
            f"{path}: keys do not match {type(model).__name__}: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    for k in list(sd):
        if sd[k].shape == own[k].shape:
            continue
        if k.startswith(CLASSIFIER_PREFIXES):
            notes.append(
                f"weights: {k} {tuple(sd[k].shape)} -> {tuple(own[k].shape)}: class count differs, "
                f"classifier replaced (trained from scratch)"
            )
            sd[k] = own[k]
        elif k in ("conv1.weight", "features.0.0.weight") and sd[k].shape[1] == 3 and own[k].shape[1] == 1:
            notes.append(f"weights: {k} RGB -> grayscale by summing the input-channel filters")
            sd[k] = sd[k].sum(1, keepdim=True)
        else:
            raise EdgeError(
                f"{path}: {k} has shape {tuple(sd[k].shape)}, the model wants {tuple(own[k].shape)} "
                f"(width, stem or block options differ?)"
            )
    model.load_state_dict(sd, strict=True)
    return notes + [f"weights: loaded {len(sd)} tensors from {path}"]


def fit_shapes(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Give conv, linear and BN layers the shapes of `state_dict` (a structurally pruned model has fewer channels),
    so a checkpoint rebuilds from its model name and options plus its tensors, with no pickled module."""
    for name, module in model.named_modules():
        weight = state_dict.get(f"{name}.weight")
        if weight is None or not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            continue
        if isinstance(module, nn.BatchNorm2d):
            module.num_features = weight.shape[0]
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = weight.shape
        else:
            depthwise = module.groups > 1 and module.groups == module.in_channels
            module.out_channels = weight.shape[0]
            module.in_channels = weight.shape[1] * (weight.shape[0] if depthwise else module.groups)
            module.groups = module.in_channels if depthwise else module.groups
        for key, _ in module.named_parameters(recurse=False):
            setattr(module, key, nn.Parameter(torch.empty_like(state_dict[f"{name}.{key}"])))
        for key, _ in module.named_buffers(recurse=False):
            if f"{name}.{key}" in state_dict:
                setattr(module, key, torch.empty_like(state_dict[f"{name}.{key}"]))
    return model


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """The eval-mode model a resnet-edge checkpoint describes (dense, sparse or structurally pruned)."""
    from models import build_model

    model = build_model(ckpt["model_name"], **ckpt["model_options"])
    fit_shapes(model, ckpt["model"]).load_state_dict(ckpt["model"], strict=True)
    return model.eval()


def derived_checkpoint(parent: dict, model: nn.Module, **notes) -> dict:
    """A checkpoint for a model derived from `parent` (pruned, quantization-aware): same format, new weights."""
    return {
        **{k: parent[k] for k in ("format", "model_name", "model_options", "config", "data")},
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "epoch": parent.get("epoch", 0),
        "best_acc": parent.get("best_acc", -1.0),
        "history": [],
        **notes,
    }
