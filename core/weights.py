"""Load a user's local pretrained weights into a model, saying what matched and what did not."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict_ema", "state_dict", "model", "model_state", "module")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: a plain state dict, a timm/torchvision file, or a Lightning
    checkpoint (``state_dict``), whichever ``path`` holds."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: pretrained weights file does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: weights file is empty (0 bytes); an interrupted download or save?")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001  (a truncated file fails in several ways)
            raise ValueError(f"{path}: cannot read weights ({_first_line(err)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: cannot read weights, truncated or not a weights file ({_first_line(err)})") from None
    for key in STATE_DICT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: no state dict of tensors found (keys: {list(obj)[:8]})")
    return obj


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (``module.`` from DDP, ``model.`` from a LightningModule) when every
    key carries it."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_pretrained(
    model: nn.Module, path: str | Path, prefixes: Iterable[str] = ("module.", "model."), strict: bool = False
) -> dict[str, list[str]]:
    """Copy matching tensors from ``path`` into ``model``; tensors whose shape differs (a new
    classifier head for transfer learning) are left at their initialization. Returns and logs the
    missing, unexpected and shape-mismatched keys."""
    return load_matching(model, strip_prefixes(read_state_dict(path), prefixes), str(path), strict)


def load_matching(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = False
) -> dict[str, list[str]]:
    """``load_pretrained`` for tensors already in memory (``source`` names where they came from, for
    the log and the errors): same-shaped tensors load, the rest are reported."""
    path = source
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in mismatched}
    result = model.load_state_dict(state, strict=False)
    report = {
        "missing": list(result.missing_keys),
        "unexpected": list(result.unexpected_keys),
        "shape_mismatch": mismatched,
    }
    loaded = len(state) - len(report["unexpected"])
    log.info("Loaded %d tensors from %s", loaded, path)
    for kind, keys in report.items():
        if keys:
            log.warning("%s: %d %s keys, e.g. %s", path, len(keys), kind, keys[:5])
    if strict and any(report.values()):
        raise ValueError(f"{path}: weights do not match the model exactly: {report}")
    if loaded == 0:
        raise ValueError(f"{path}: no tensor matched the model; is it the right architecture?")
    return report
