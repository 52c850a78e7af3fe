"""Import MediaPipe's published face detector and face mesh into a FaceMeshTask checkpoint.

    python -m tasks.facemesh.import_mediapipe data/mediapipe/mediapipe-0.10.14-*.whl --out <ckpt>
    python -m tasks.facemesh.import_mediapipe <extracted folder> --out <ckpt>
    python -m tasks.facemesh.import_mediapipe face_detection_short_range.tflite face_landmark.tflite \\
        face_mesh_connections.py --out <ckpt>

Reads the weights from the .tflite files (core.tflite: no mediapipe import, no network), copies them into
the project's layer-for-layer networks (tasks/facemesh/mediapipe_nets.py) and the canonical mesh from
``face_mesh_connections.py`` into the task's ``topology``, and writes a checkpoint that
``tasks.facemesh.run``, ``predict.py task=facemesh``, Photobooth's ``--detector`` and
``train.py task.pretrained_path=`` take like any other. ``make mediapipe-models`` runs it on the wheel
pip fetched."""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from core.checkpoint import TASK_CLASS_KEY, qualified_name
from core.data import DataFormatError
from core.images import decode_image
from core.io import atomic_path, atomic_write_json
from core.tf_layers import SameConv2d
from core.tflite import TFLiteGraph, TFLiteOp, read_tflite
from datamodules.face_topology import mediapipe_topology, mediapipe_uv
from tasks.facemesh.mediapipe_nets import MediaPipeBlazeFace, MediaPipeFaceMesh
from tasks.facemesh.module import FaceMeshTask
from tasks.facemesh.pipeline import FaceMeshPipeline

# The published files, by their path inside the mediapipe wheel (0.10.x).
PUBLISHED = {
    "detector": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "mesh": "mediapipe/modules/face_landmark/face_landmark.tflite",
    "connections": "mediapipe/python/solutions/face_mesh_connections.py",
}
# What each model looks like from outside: input shape -> output shapes (as sorted tuples).
SIGNATURES = {
    "detector": ((1, 128, 128, 3), ((1, 896, 1), (1, 896, 16))),
    "mesh": ((1, 192, 192, 3), ((1, 1, 1, 1), (1, 1, 1, 1404))),
}
DESCRIPTIONS = {
    "detector": "MediaPipe's short-range face detector (1x128x128x3 -> 896x16 boxes, 896x1 scores)",
    "mesh": "MediaPipe's face mesh (1x192x192x3 -> 1404 points, 1 face flag)",
    "connections": "MediaPipe's face_mesh_connections.py",
}
# MediaPipe's graph settings the imported task keeps (face_detection_short_range_common.pbtxt,
# face_detection_front_detection_to_roi.pbtxt, face_landmark_cpu.pbtxt).
MEDIAPIPE_TASK = {
    "num_points": 468,
    "variant": "mediapipe",
    "detector_variant": "mediapipe",
    "crop_size": 192,
    "detector_size": 128,
    "crop_scale": 1.5,
    "score_threshold": 0.5,
    "nms_iou_threshold": 0.3,
    "face_threshold": 0.5,
}
LAYER_KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU")


def _signature(graph: TFLiteGraph) -> tuple:
    ins = [graph.tensors[i].shape for i in graph.inputs]
    outs = tuple(sorted(graph.tensors[i].shape for i in graph.outputs))
    return (ins[0] if len(ins) == 1 else tuple(ins)), outs


def identify(graph: TFLiteGraph) -> str | None:
    """``detector`` or ``mesh`` by the model's input and output shapes (None: neither)."""
    sig = _signature(graph)
    return next((name for name, expected in SIGNATURES.items() if expected == sig), None)


def read_published(sources: Sequence[str | Path]) -> dict[str, tuple[Path, bytes]]:
    """The detector, mesh and connections files (name -> (path for messages, bytes)) from a wheel, a
    folder (searched recursively) or the files themselves."""
    found: dict[str, tuple[Path, bytes]] = {}
    basenames = {Path(member).name: name for name, member in PUBLISHED.items()}
    for source in map(Path, sources):
        if not source.exists():
            raise FileNotFoundError(f"{source}: expected the mediapipe wheel, a folder or a model file")
        if source.is_file() and source.suffix in (".whl", ".zip"):  # (a .tflite with metadata is a zip too)
            _read_wheel(source, found)
            missing = [PUBLISHED[n] for n in PUBLISHED if n not in found]
            if missing:
                raise DataFormatError(
                    source, f"expected the mediapipe 0.10.x wheel with {', '.join(missing)}; the archive lacks them"
                )
        elif source.is_dir():
            for path in sorted(source.rglob("*")):
                if path.name in basenames and path.is_file():
                    found.setdefault(basenames[path.name], (path, path.read_bytes()))
            for wheel in sorted(source.glob("mediapipe-*.whl")):  # e.g. the folder `make mediapipe-models` fills
                _read_wheel(wheel, found)
        elif source.suffix == ".py":
            found["connections"] = (source, source.read_bytes())
        else:
            data = source.read_bytes()
            name = identify(read_tflite(source, data))
            if name is None:
                raise DataFormatError(
                    source, f"not one of the face models: expected {DESCRIPTIONS['detector']} or {DESCRIPTIONS['mesh']}"
                )
            found[name] = (source, data)
    missing = [n for n in PUBLISHED if n not in found]
    if missing:
        where = ", ".join(map(str, sources))
        raise FileNotFoundError(f"{where}: expected {'; '.join(DESCRIPTIONS[n] for n in missing)}, not found there")
    return found


def _read_wheel(wheel: Path, found: dict[str, tuple[Path, bytes]]) -> None:
    """Add the published files a wheel holds (and ``found`` lacks) to ``found``."""
    if not zipfile.is_zipfile(wheel):
        raise DataFormatError(wheel, "expected the mediapipe wheel (a zip archive); truncated or not a wheel")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name, member in PUBLISHED.items():
            if member in names and name not in found:
                found[name] = (Path(f"{wheel}!{member}"), archive.read(member))


def _ancestors(graph: TFLiteGraph, tensor: int) -> set[int]:
    """Indices of the ops that ``tensor`` depends on."""
    producer = {t: i for i, op in enumerate(graph.ops) for t in op.outputs}
    seen: set[int] = set()
    todo = [tensor]
    while todo:
        op = producer.get(todo.pop())
        if op is not None and op not in seen:
            seen.add(op)
            todo.extend(t for t in graph.ops[op].inputs if t >= 0)
    return seen


def graph_layers(graph: TFLiteGraph, heads: Sequence[int]) -> list[TFLiteOp]:
    """The weight layers (convolutions, PReLUs) in the order our networks list them: the trunk the
    ``heads`` (output tensors) share, then each head's own layers, each part in execution order."""
    sets = [_ancestors(graph, t) for t in heads]
    shared = set.intersection(*sets)
    order, taken = sorted(shared), set(shared)
    for own in sets:
        order += sorted(own - taken)
        taken |= own
    return [graph.ops[i] for i in order if graph.ops[i].kind in LAYER_KINDS]


def network_layers(model: nn.Module) -> list[nn.Module]:
    """The weight layers of one of our networks, in registration (= execution) order."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.PReLU))]


def _expected_kind(module: nn.Module) -> str:
    if isinstance(module, nn.PReLU):
        return "PRELU"
    return "DEPTHWISE_CONV_2D" if module.groups > 1 else "CONV_2D"


def copy_layer(graph: TFLiteGraph, op: TFLiteOp, module: nn.Module, where: str) -> None:
    """Copy one TFLite layer's weights into ``module`` (TFLite OHWI / 1HWO / (1, 1, C) layouts ->
    PyTorch's), checking kind, shape, stride and padding."""
    kind = _expected_kind(module)
    if op.kind != kind:
        raise DataFormatError(graph.path, f"{where}: expected {kind}, the file has {op.kind}")
    if kind == "PRELU":
        alpha = graph.array(op.inputs[1]).reshape(-1)
        if alpha.shape != tuple(module.weight.shape):
            raise DataFormatError(
                graph.path, f"{where}: PReLU of {alpha.size} channels, expected {module.weight.numel()}"
            )
        module.weight.data.copy_(torch.from_numpy(alpha))
        return
    weight = graph.array(op.inputs[1])
    weight = weight.transpose(3, 0, 1, 2) if kind == "DEPTHWISE_CONV_2D" else weight.transpose(0, 3, 1, 2)
    if weight.shape != tuple(module.weight.shape):
        raise DataFormatError(graph.path, f"{where}: weights {weight.shape}, expected {tuple(module.weight.shape)}")
    stride = (op.options.get("stride_h"), op.options.get("stride_w"))
    if stride != tuple(module.stride):
        raise DataFormatError(graph.path, f"{where}: stride {stride}, expected {tuple(module.stride)}")
    same = op.options.get("padding") == "SAME" and max(module.kernel_size) > 1
    if same != isinstance(module, SameConv2d) or op.options.get("fused_activation_function", "NONE") != "NONE":
        raise DataFormatError(graph.path, f"{where}: padding/activation {op.options} differ from the network's")
    module.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
    bias = graph.array(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(weight.shape[0])
    module.bias.data.copy_(torch.from_numpy(bias.astype(np.float32)))


def load_graph(model: nn.Module, graph: TFLiteGraph, heads: Sequence[int]) -> None:
    """Copy every weight layer of ``graph`` into ``model`` (same structure, or a one-line error)."""
    ops, layers = graph_layers(graph, heads), network_layers(model)
    if len(ops) != len(layers):
        raise DataFormatError(
            graph.path, f"has {len(ops)} weight layers where {type(model).__name__} has {len(layers)}: another model?"
        )
    for i, (op, module) in enumerate(zip(ops, layers)):
        copy_layer(graph, op, module, f"layer {i} (tensor {op.outputs[0]} {graph.tensors[op.outputs[0]].name!r})")


def _outputs_by_shape(graph: TFLiteGraph, shapes: Sequence[tuple]) -> list[int]:
    by_shape = {graph.tensors[i].shape: i for i in graph.outputs}
    return [by_shape[s] for s in shapes]


def imported_networks(found: dict[str, tuple[Path, bytes]]) -> tuple[MediaPipeBlazeFace, MediaPipeFaceMesh]:
    """The two networks with the published weights."""
    graphs = {}
    for name in ("detector", "mesh"):
        path, data = found[name]
        graph = read_tflite(path, data)
        if identify(graph) != name:
            ins, outs = _signature(graph)
            raise DataFormatError(path, f"expected {DESCRIPTIONS[name]}, the file maps {ins} -> {list(outs)}")
        graphs[name] = graph
    detector, mesh = MediaPipeBlazeFace(), MediaPipeFaceMesh()
    # Our layer order: detector trunk, score heads, box heads; mesh trunk, points head, flag head.
    load_graph(detector, graphs["detector"], _outputs_by_shape(graphs["detector"], [(1, 896, 1), (1, 896, 16)]))
    load_graph(mesh, graphs["mesh"], _outputs_by_shape(graphs["mesh"], [(1, 1, 1, 1404), (1, 1, 1, 1)]))
    return detector.eval(), mesh.eval()


def import_mediapipe(sources: Sequence[str | Path], out: str | Path, topology_out: str | Path | None = None) -> Path:
    """Write the FaceMeshTask checkpoint of MediaPipe's face detector + face mesh to ``out`` (and its
    topology, with the generator's (u, v) per vertex, to ``topology_out``)."""
    found = read_published(sources)
    detector, mesh = imported_networks(found)
    path, data = found["connections"]
    topology = mediapipe_topology(data.decode("utf-8", "replace"), path)
    task = FaceMeshTask(**MEDIAPIPE_TASK, topology=topology.as_json())
    task.detector.load_state_dict(detector.state_dict())
    task.mesh.load_state_dict(mesh.state_dict())
    # Where each vertex sits on the generator's parametric face: from the imported model's own mesh of a
    # frontal face (matplotlib's Grace Hopper photograph), so generated data can speak MediaPipe's indices.
    faces = FaceMeshPipeline.from_task(task.eval()).process_image(frontal_photograph())
    if len(faces) != 1:
        raise DataFormatError(found["mesh"][0], f"the imported models found {len(faces)} faces on the frontal photo")
    topology = topology.with_uv(mediapipe_uv(faces[0].points, topology))
    task.topology = topology
    task.hparams["topology"] = topology.as_json()
    checkpoint = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": pl.__version__,
        TASK_CLASS_KEY: qualified_name(FaceMeshTask),
        "mediapipe_import": {name: [str(p), hashlib.sha256(d).hexdigest()] for name, (p, d) in found.items()},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    if topology_out is not None:  # the generator's input (data.generator.topology)
        atomic_write_json(topology_out, topology.as_json(), indent=None)
    return out


def frontal_photograph() -> np.ndarray:
    """A frontal face photograph a runtime dependency ships (matplotlib's sample of Grace Hopper)."""
    sample = matplotlib.cbook.get_sample_data("grace_hopper.jpg")
    return np.asarray(decode_image(sample, what="matplotlib's sample image", name="grace_hopper.jpg"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="the mediapipe wheel, a folder, or the .tflite/.py files")
    parser.add_argument("--out", required=True, help="the checkpoint to write")
    parser.add_argument("--topology-out", default=None, help="also write the canonical mesh with (u, v) as JSON")
    args = parser.parse_args(argv)
    try:
        out = import_mediapipe(args.sources, args.out, args.topology_out)
    except (DataFormatError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
