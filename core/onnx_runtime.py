"""A PyTorch network exported with ``torch.onnx`` and run by ONNX Runtime on the CPU, as a drop-in for
the module itself: the same call, torch tensors in and out, the module's attributes (``input_size``,
``coding``, ...) and parameters (device, dtype) still readable, so a pipeline written for the module
runs unchanged. The PyTorch module stays the reference: every export is checked against it.

Needs ``onnx`` and ``onnxruntime`` (dependencies of the project, imported lazily at the first export)."""

from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from core.tf_layers import SameConv2d, same_padding


class LinearPlusReluPReLU(nn.Module):
    """PReLU as a * x + (1 - a) * relu(x), the two products as depthwise 1x1 convolutions: the same
    function in ops ONNX Runtime keeps in its blocked layout, where its PRelu kernel (a generic
    broadcast) took ~40 % of the face mesh's time."""

    def __init__(self, prelu: nn.PReLU, channels: int) -> None:
        super().__init__()
        slope = prelu.weight.detach().reshape(-1).expand(channels).reshape(channels, 1, 1, 1)
        self.linear = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        self.positive = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        self.linear.weight.data.copy_(slope)
        self.positive.weight.data.copy_(1 - slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.positive(torch.relu(x))


def _padded_conv(conv: nn.Conv2d, height: int, width: int) -> nn.Module:
    """``conv`` (a TensorFlow-SAME convolution) for inputs of this size: a plain convolution, after a
    constant zero pad only where SAME's padding is asymmetric."""
    pads = [same_padding(size, k, s) for size, k, s in zip((height, width), conv.kernel_size, conv.stride)]
    symmetric = all(before == after for before, after in pads)
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        tuple(before for before, _ in pads) if symmetric else 0,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    plain.load_state_dict(conv.state_dict())
    if symmetric:
        return plain
    (top, bottom), (left, right) = pads
    return nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain)


def runtime_friendly(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``module`` computing the same function on inputs shaped like ``example`` with layers
    ONNX Runtime runs faster: PReLU as ``LinearPlusReluPReLU``, and every TensorFlow-SAME convolution
    (core.tf_layers.SameConv2d, which computes its padding from the input size at each call) as a plain
    convolution with that input size's padding fixed (no shape arithmetic, and no separate Pad node
    where the padding is symmetric)."""
    module = copy.deepcopy(module).eval()
    sizes: dict[nn.Module, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, args: sizes.__setitem__(m, tuple(args[0].shape)))
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.PReLU)
    ]
    with torch.no_grad():
        module(example)
    for hook in hooks:
        hook.remove()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if child not in sizes:
                continue  # not run on this input
            if isinstance(child, nn.PReLU):
                setattr(parent, name, LinearPlusReluPReLU(child, sizes[child][1]))
            elif isinstance(child, SameConv2d):
                setattr(parent, name, _padded_conv(child, *sizes[child][2:]))
    return module


def _as_tuple(outputs) -> tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs, tuple | list) else (outputs,)


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Write ``module`` (eval mode, one input of ``example``'s static shape) as ONNX to ``path``."""
    path = Path(path)
    with torch.no_grad():
        n = len(_as_tuple(module(example)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings on Python-side shape arithmetic (constant here)
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=[f"output{i}" for i in range(n)],
            opset_version=17,
        )
    return path


class OnnxRuntimeModule(nn.Module):
    """``reference`` run by ONNX Runtime (``threads`` intra-op threads, CPU). One session per input
    shape, exported on first use (shapes stay static, so ONNX Runtime folds the shape arithmetic) and
    checked against ``reference`` on that input (``atol``, plus 1e-5 of the output's largest magnitude).
    ``exported``: what to export instead, a module meant to compute the same function in a form the
    runtime prefers (checked against ``reference`` all the same). Calls return what ``reference``
    returns; attribute reads fall through to it."""

    static_shapes = True  # callers with varying batch sizes may prefer one-image calls (one session)

    def __init__(
        self,
        reference: nn.Module,
        threads: int = 1,
        folder: str | Path | None = None,
        atol: float = 1e-3,
        exported: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.reference = reference.eval()
        self._exported = [exported.eval() if exported is not None else self.reference]  # a list: not a submodule
        self.threads, self.atol = threads, atol
        self._tmp = None if folder is not None else tempfile.TemporaryDirectory(prefix="onnx_")
        self.folder = Path(folder if folder is not None else self._tmp.name)
        self.sessions: dict[tuple[int, ...], object] = {}
        self.returns_tuple = False

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["reference"], name)

    def session(self, x: torch.Tensor):
        """The ONNX Runtime session for inputs of ``x``'s shape (exported and checked on first use)."""
        shape = tuple(x.shape)
        if shape not in self.sessions:
            import onnxruntime as ort

            path = export_onnx(
                runtime_friendly(self._exported[0], x), x, self.folder / f"{'x'.join(map(str, shape))}.onnx"
            )
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            with torch.no_grad():
                raw = self.reference(x)
            self.returns_tuple, want = isinstance(raw, tuple | list), _as_tuple(raw)
            got = session.run(None, {"input": x.numpy()})
            for i, (w, g) in enumerate(zip(want, got)):
                error = float((w - torch.from_numpy(g)).abs().max())
                if error > self.atol + 1e-5 * float(w.abs().max()):  # + float32's rounding of large values
                    raise RuntimeError(f"{path}: output {i} differs from the PyTorch module by {error:.3g}")
            self.sessions[shape] = session
        return self.sessions[shape]

    def train(self, mode: bool = True) -> OnnxRuntimeModule:
        """Only the flag: the exported graph is the reference in eval mode whatever this says, and
        walking the reference's modules at every call (pipelines toggle eval/train around inference)
        cost as much CPU as the detector itself."""
        self.training = mode
        return self

    def forward(self, x: torch.Tensor):
        x = x.detach().cpu().float().contiguous()
        outputs = tuple(torch.from_numpy(o) for o in self.session(x).run(None, {"input": x.numpy()}))
        return outputs if self.returns_tuple else outputs[0]
