"""Which engine runs the face-mesh networks at inference: ``torch`` (the reference, and the only one
training uses) or ``onnxruntime`` (their export by core/onnx_runtime.py, checked equal to PyTorch when it
is made; about twice as fast per frame on a CPU core). The tools (``python -m tasks.facemesh.run``,
``predict.py task=facemesh``, other systems' ``detect_faces``) take ONNX Runtime where it is installed."""

from __future__ import annotations

import importlib.util

import torch

RUNTIMES = ("onnxruntime", "torch")


def default_runtime() -> str:
    """``onnxruntime`` where ONNX Runtime and the exporter's ``onnx`` are installed, else ``torch``."""
    installed = all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))
    return "onnxruntime" if installed else "torch"


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    return runtime


def inference_network(module: torch.nn.Module, runtime: str) -> torch.nn.Module:
    """``module`` in eval mode (``torch``) or its ONNX Runtime drop-in with as many threads as torch uses."""
    if check_runtime(runtime) == "torch":
        return module.eval()
    from core.onnx_runtime import OnnxRuntimeModule

    return OnnxRuntimeModule(module, threads=torch.get_num_threads())
