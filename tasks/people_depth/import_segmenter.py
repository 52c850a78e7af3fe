"""Import MediaPipe's published person segmenter into the project's PyTorch network.

    python -m tasks.people_depth.import_segmenter <mediapipe wheel | folder | selfie_segmentation.tflite> \\
        --out checkpoints/selfie_segmenter.pt

Reads ``mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite`` (from the mediapipe==0.10.14
wheel, an unpacked copy or the file itself: no mediapipe import, no network), copies its convolution
weights in graph order into ``SelfieSegmenter`` and writes its state dict (``predict.py task=people_depth
product.writer.segmenter=<file>`` reads it). A file that is not this model fails naming the file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.data import DataFormatError
from core.io import atomic_path
from core.tflite import TFLiteGraph, read_published_model
from tasks.people_depth.segmenter import INPUT_SIZE, SelfieSegmenter

MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
TRANSPOSED = "Convolution2DTransposeBias"  # MediaPipe's custom op: transposed convolution plus bias
CONV_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", TRANSPOSED)


def _torch_layout(kind: str, kernel: np.ndarray) -> np.ndarray:
    """TFLite kernels to PyTorch: CONV_2D OHWI -> OIHW; DEPTHWISE_CONV_2D 1HWC -> C1HW; the
    transposed convolution OHWI -> IOHW (ConvTranspose2d's layout)."""
    return kernel.transpose(0, 3, 1, 2) if kind == "CONV_2D" else kernel.transpose(3, 0, 1, 2)


def check_segmenter_graph(graph: TFLiteGraph) -> None:
    """Refuse a model that is not the selfie segmenter, saying what was expected."""
    shapes_in = [graph.tensors[i].shape for i in graph.inputs]
    shapes_out = [graph.tensors[i].shape for i in graph.outputs]
    expected_in, expected_out = [(1, INPUT_SIZE, INPUT_SIZE, 3)], [(1, INPUT_SIZE, INPUT_SIZE, 1)]
    if shapes_in != expected_in or shapes_out != expected_out or TRANSPOSED not in graph.op_counts():
        raise DataFormatError(
            graph.path,
            f"not MediaPipe's selfie segmenter: inputs {shapes_in}, outputs {shapes_out} (expected "
            f"selfie_segmentation.tflite: input {expected_in[0]}, output {expected_out[0]}, a {TRANSPOSED} op)",
        )


def segmenter_state_dict(graph: TFLiteGraph) -> dict[str, torch.Tensor]:
    """The state dict of ``SelfieSegmenter`` holding the weights of ``graph`` (selfie_segmentation.tflite)."""
    check_segmenter_graph(graph)
    model = SelfieSegmenter()
    layers = model.tflite_layers()
    ops = graph.ops_of_kind(*CONV_KINDS)
    if len(ops) != len(layers):
        raise DataFormatError(
            graph.path, f"{len(ops)} convolutions, expected selfie_segmentation.tflite's {len(layers)}"
        )
    for number, (op, layer) in enumerate(zip(ops, layers)):
        kernel = _torch_layout(op.kind, graph.array(op.inputs[1]))
        bias = graph.array(op.inputs[2])
        if kernel.shape != tuple(layer.weight.shape) or bias.shape != tuple(layer.bias.shape):
            name = graph.tensors[op.inputs[1]].name
            raise DataFormatError(
                graph.path,
                f"convolution {number} ({name}): kernel {kernel.shape}, bias {bias.shape}, expected "
                f"{tuple(layer.weight.shape)}, {tuple(layer.bias.shape)} of selfie_segmentation.tflite",
            )
        _copy(layer, kernel, bias)
    return model.state_dict()


def _copy(layer: nn.Conv2d | nn.ConvTranspose2d, kernel: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
        layer.bias.copy_(torch.from_numpy(bias))


def import_segmenter(source: str | Path, out: str | Path) -> Path:
    """Read the segmenter from ``source`` (wheel, folder or .tflite) and write its state dict to ``out``."""
    state = segmenter_state_dict(read_published_model(source, MEMBER))
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the mediapipe==0.10.14 wheel, a folder holding it unpacked, or the .tflite")
    parser.add_argument("--out", required=True, help="where to write the PyTorch weights (.pt)")
    args = parser.parse_args(argv)
    try:
        print(import_segmenter(args.source, args.out))
    except (DataFormatError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
