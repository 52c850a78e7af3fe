"""Config values checked against the type annotations of the constructors they go to, before
anything is built, so ``data.batch_size=abc`` fails with the key's name in one line instead of a
TypeError deep inside a DataLoader or a Hydra InstantiationException trace.

Only clear mismatches are refused (text for a number, a fraction for an integer, a scalar for a
list...); annotations this checker does not understand accept any value."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import Any, Union

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

GROUPS = ("data", "task", "trainer", "callbacks", "logger")
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


class ConfigValueError(TypeError):
    """A config value of the wrong type; the message names the key."""


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_node(value: Any) -> bool:
    return isinstance(value, dict) and "_target_" in value


def _accepts(value: Any, hint: Any) -> bool:
    """Whether ``value`` (a plain config value) can stand for annotation ``hint``."""
    if value is None or _is_node(value) or hint in (Any, inspect.Parameter.empty, object):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_accepts(value, a) for a in args)
    if origin is typing.Literal:
        return True  # the class validates its own choices
    if hint is type(None):
        return False
    if hint is bool:
        return isinstance(value, bool) or (isinstance(value, int) and value in (0, 1))
    if hint is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if hint is float:
        return isinstance(value, (int, float))
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence, typing.Sequence, collections.abc.Iterable):
        if not isinstance(value, (list, tuple)):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(args) != len(value) or all(_accepts(v, a) for v, a in zip(value, args))
        element = args[0] if args else Any
        return all(_accepts(v, element) for v in value)
    if container in (dict, collections.abc.Mapping, typing.Mapping):
        return isinstance(value, dict)
    return True  # classes, callables, paths, forward references: not checked here


def hint_name(hint: Any) -> str:
    """``int``, ``int or str``, ``list of float``: an annotation as a user reads it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(hint_name(a) for a in args if a is not type(None))
    if origin is not None and args:
        name = getattr(origin, "__name__", str(origin))
        return f"{name} of {hint_name(args[0])}"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _hint_for(target: Any, key: str) -> Any:
    """The annotation of parameter ``key`` of ``target`` (a class's ``__init__``, following
    ``**kwargs`` up its bases, or a function)."""
    owners = [k.__init__ for k in target.__mro__ if "__init__" in vars(k)] if isinstance(target, type) else [target]
    for fn in owners:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return Any
        if key in params and params[key].kind not in (params[key].VAR_KEYWORD, params[key].VAR_POSITIONAL):
            try:
                hints = typing.get_type_hints(fn)
            except Exception:  # noqa: BLE001  (unresolvable annotations: do not check)
                return Any
            return hints.get(key, Any)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return Any
    return Any


def check_node(node: dict, where: str) -> None:
    """Check one ``_target_`` node (plain container) and the nodes nested in it."""
    try:
        target = get_object(node["_target_"])
    except Exception:  # noqa: BLE001  (Hydra reports an unknown target itself)
        return
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        hint = _hint_for(target, key)
        if not _accepts(value, hint):
            expected = hint_name(hint)
            raise ConfigValueError(f"config key {where}.{key}: expected {expected}, got {_describe(value)}")
        _check_nested(value, f"{where}.{key}")


def _check_nested(value: Any, where: str) -> None:
    if _is_node(value):
        check_node(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_nested(item, f"{where}.{key}")
    elif isinstance(value, list):
        for k, item in enumerate(value):
            _check_nested(item, f"{where}[{k}]")


def check_config_types(cfg: DictConfig, groups: tuple[str, ...] | None = GROUPS) -> None:
    """Refuse config values whose type does not fit the constructor argument they feed."""
    for group in groups:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        plain = OmegaConf.to_container(node, resolve=True)
        _check_nested(plain, group)
