"""What registers itself, listed once and imported explicitly.

No task, plugin or package ``__init__`` registers anything as a side effect of being imported.
Instead, the modules that add timm models are named in ``MODEL_MODULES`` (imported by
``register_models()`` before a model is built by name), and the OmegaConf resolvers that live in a
task's room are named in ``RESOLVERS`` as ``"module:function"`` (``core.resolvers`` registers them
lazily, so composing a config imports nothing heavy until a resolver is used)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# Modules whose import registers timm models (``@register_model``).
MODEL_MODULES = ("tasks.efficientnet.model",)

# OmegaConf resolver name -> "module:function" that computes it.
RESOLVERS = {
    "compound_resolution": "tasks.efficientnet.resolvers:compound_resolution",
    "efficientnet_variant": "tasks.efficientnet.resolvers:efficientnet_variant",
}


def register_models() -> None:
    """Import every module of ``MODEL_MODULES`` so their timm models exist by name."""
    for name in MODEL_MODULES:
        importlib.import_module(name)


def lazy_function(target: str) -> Callable[..., Any]:
    """A function that imports ``"module:function"`` on its first call and forwards to it."""
    module_name, _, attribute = target.partition(":")

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(module_name), attribute)(*args)

    call.__name__ = attribute
    return call
