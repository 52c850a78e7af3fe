"""Which engine runs the face-mesh networks at inference: ``torch`` (the reference, and the only one
training uses) or ``onnxruntime`` (their export by core/onnx_runtime.py, checked equal to PyTorch when it
is made; about twice as fast per frame on a CPU core). The tools (``python -m tasks.facemesh.run``,
``predict.py task=facemesh``, other systems' ``detect_faces``) take ONNX Runtime where it is installed."""

from __future__ import annotations

import importlib.util

import cv2
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


def use_cpu_threads(threads: int) -> None:
    """One CPU budget for the whole pipeline: torch's intra-op threads (ONNX Runtime's sessions take the same
    count, see :func:`inference_network`) and OpenCV's (the crop and detector warps). Left alone, OpenCV
    splits each small warp over every core, and the waiting threads cost about 15 % more CPU per frame
    than one thread does (benchmarks/bench_facemesh.py --runtimes)."""
    if threads < 1:
        raise ValueError(f"threads={threads}: expected at least 1")
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def inference_network(module: torch.nn.Module, runtime: str) -> torch.nn.Module:
    """``module`` in eval mode (``torch``) or its ONNX Runtime drop-in with as many threads as torch uses
    (exporting ``module.widened()`` where the network offers that form, checked equal to ``module``)."""
    if check_runtime(runtime) == "torch":
        return module.eval()
    from core.onnx_runtime import OnnxRuntimeModule

    exported = module.widened() if hasattr(module, "widened") else None
    return OnnxRuntimeModule(module, threads=torch.get_num_threads(), exported=exported)
