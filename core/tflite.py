"""A reader of TFLite flatbuffers: tensors, constant arrays and operators in execution order.

Published models (MediaPipe's face detector, face mesh, selfie segmenter) ship as .tflite files; importing
their weights into PyTorch needs the graph's structure and its constants, nothing more. NumPy and the
`tflite` package (the generated flatbuffer accessors) only: no TensorFlow, no torch.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite

from core.data import DataFormatError, require_file

# tflite.TensorType -> numpy dtype (the types published vision models use).
_DTYPES = {
    tflite.TensorType.FLOAT32: np.dtype(np.float32),
    tflite.TensorType.FLOAT16: np.dtype(np.float16),
    tflite.TensorType.INT32: np.dtype(np.int32),
    tflite.TensorType.UINT8: np.dtype(np.uint8),
    tflite.TensorType.INT64: np.dtype(np.int64),
    tflite.TensorType.BOOL: np.dtype(np.bool_),
    tflite.TensorType.INT16: np.dtype(np.int16),
    tflite.TensorType.INT8: np.dtype(np.int8),
    tflite.TensorType.FLOAT64: np.dtype(np.float64),
}
_OPTION_CLASSES = {code: name for name, code in vars(tflite.BuiltinOptions).items() if not name.startswith("_")}
_ENUM_OPTIONS = {"FusedActivationFunction": tflite.ActivationFunctionType, "Padding": tflite.Padding}
_FILE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class TFLiteTensor:
    """One tensor of the graph: its index, name, static shape and element type."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    buffer: int


@dataclass(frozen=True)
class TFLiteOp:
    """One operator: ``kind`` is the builtin name (CONV_2D, ...) or a custom op's code; ``options`` its
    builtin options as plain values (stride_h, padding="SAME", fused_activation_function="NONE", ...)."""

    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)
    custom_options: bytes = b""


@dataclass
class TFLiteGraph:
    """The first subgraph of a .tflite model, with its constant buffers."""

    path: Path
    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: list[int]
    outputs: list[int]
    buffers: list[bytes]

    def producer(self, index: int) -> TFLiteOp | None:
        """The op that writes tensor ``index`` (None for a constant or a graph input)."""
        for op in self.ops:
            if index in op.outputs:
                return op
        return None

    def consumers(self, index: int) -> list[TFLiteOp]:
        """The ops that read tensor ``index``, in execution order."""
        return [op for op in self.ops if index in op.inputs]

    def is_constant(self, index: int) -> bool:
        """Whether tensor ``index`` holds data in the file (directly or behind a DEQUANTIZE)."""
        if self.buffers[self.tensors[index].buffer]:
            return True
        op = self.producer(index)
        return op is not None and op.kind == "DEQUANTIZE" and self.is_constant(op.inputs[0])

    def array(self, index: int) -> np.ndarray:
        """Tensor ``index``'s constant data as float32 in its TFLite layout (conv weights OHWI, depthwise
        1HWO), following a DEQUANTIZE producer to the fp16 buffer it reads."""
        tensor = self.tensors[index]
        data = self.buffers[tensor.buffer]
        if not data:
            op = self.producer(index)
            if op is not None and op.kind == "DEQUANTIZE":
                return self.array(op.inputs[0])
            raise DataFormatError(self.path, f"tensor {index} ({tensor.name!r}) is not a constant")
        values = np.frombuffer(data, dtype=tensor.dtype)
        if values.size != int(np.prod(tensor.shape)):
            raise DataFormatError(
                self.path, f"tensor {index} ({tensor.name!r}): {values.size} values for shape {tensor.shape}"
            )
        return values.reshape(tensor.shape).astype(np.float32)

    def ops_of_kind(self, *kinds: str) -> list[TFLiteOp]:
        """The ops of the given kinds, in execution order."""
        return [op for op in self.ops if op.kind in kinds]

    def op_counts(self) -> dict[str, int]:
        """How many ops of each kind the graph has (a model's fingerprint)."""
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        return counts


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _enum_name(enum: type, value: int) -> str:
    for key, code in vars(enum).items():
        if not key.startswith("_") and code == value:
            return key
    return str(value)


def _options(op) -> dict:
    """An operator's builtin options table read through its generated accessor class, as plain values."""
    class_name = _OPTION_CLASSES.get(op.BuiltinOptionsType(), "NONE")
    table = op.BuiltinOptions()
    if class_name == "NONE" or table is None or not hasattr(tflite, class_name):
        return {}
    options = getattr(tflite, class_name)()
    options.Init(table.Bytes, table.Pos)
    values = {}
    for name in dir(options):
        if not name[0].isupper() or name == "Init" or name.startswith("GetRootAs"):
            continue
        if name.endswith(("AsNumpy", "Length", "IsNone")) or name.startswith("BufferHas"):
            continue
        getter = getattr(options, name)
        try:
            value = getter()
        except TypeError:  # a vector accessor that takes an index
            if hasattr(options, name + "AsNumpy"):
                value = getattr(options, name + "AsNumpy")()
                value = value.tolist() if isinstance(value, np.ndarray) else []
            else:
                continue
        if name in _ENUM_OPTIONS:
            value = _enum_name(_ENUM_OPTIONS[name], value)
        values[_snake(name)] = value
    return values


def _buffer_bytes(model, index: int, data: bytes) -> bytes:
    buffer = model.Buffers(index)
    if buffer is None:
        return b""
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and size:  # large models keep buffers after the flatbuffer
        if offset + size > len(data):
            raise ValueError(f"buffer {index} ends at byte {offset + size}, past the end of the file")
        return data[offset : offset + size]
    return b""


def read_tflite(path: str | Path, data: bytes | None = None) -> TFLiteGraph:
    """Parse a .tflite file (or its bytes, e.g. a member of a wheel, named by ``path`` in errors).

    Raises DataFormatError naming the file when it is not a TFLite flatbuffer or is truncated."""
    path = Path(path)
    if data is None:
        data = require_file(path, "a .tflite model").read_bytes()
    if len(data) < 8 or data[4:8] != _FILE_IDENTIFIER:
        raise DataFormatError(path, "not a TFLite model (no 'TFL3' flatbuffer identifier at byte 4)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("the model has no subgraph")
        graph = model.Subgraphs(0)
        buffers = [_buffer_bytes(model, i, data) for i in range(model.BuffersLength())]
        tensors = []
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            dtype = _DTYPES.get(tensor.Type())
            if dtype is None:
                raise ValueError(f"tensor {i} has the unsupported type {_enum_name(tflite.TensorType, tensor.Type())}")
            if not 0 <= tensor.Buffer() < len(buffers):
                raise ValueError(f"tensor {i} points to buffer {tensor.Buffer()} of {len(buffers)}")
            tensors.append(TFLiteTensor(i, tensor.Name().decode("utf-8", "replace"), shape, dtype, tensor.Buffer()))
        ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            kind = tflite.utils.BUILTIN_OPCODE2NAME.get(builtin, str(builtin))
            custom = b""
            if kind == "CUSTOM":
                kind = (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
                custom = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b""
            inputs = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
            outputs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
            ops.append(TFLiteOp(kind, inputs, outputs, _options(op), custom))
        inputs = [int(t) for t in graph.InputsAsNumpy()]
        outputs = [int(t) for t in graph.OutputsAsNumpy()]
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, AttributeError, struct.error) as err:
        raise DataFormatError(path, f"truncated or corrupt TFLite model ({err})") from None
    return TFLiteGraph(path, tensors, ops, inputs, outputs, buffers)


def _is_tflite(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(8)[4:8] == _FILE_IDENTIFIER


def read_published_model(source: str | Path, member: str) -> TFLiteGraph:
    """The model ``member`` (its path inside the mediapipe wheel, e.g.
    ``mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite``) read from ``source``: the
    wheel itself, a folder holding the file anywhere below it (an unpacked wheel), or the .tflite file.

    A wheel or folder without the model, or a damaged wheel, raises DataFormatError naming ``source``."""
    source = Path(source)
    name = Path(member).name
    if not source.exists():
        raise FileNotFoundError(f"{source}: expected the mediapipe wheel, a folder or {name}, but it does not exist")
    if source.is_dir():
        found = sorted(source.rglob(name))
        if not found:
            raise DataFormatError(source, f"no {name} below this folder (expected an unpacked mediapipe wheel)")
        return read_tflite(found[0])
    # A .tflite with metadata carries a zip of its associated files, so the TFLite identifier decides first.
    if source.suffix in (".whl", ".zip") or (not _is_tflite(source) and zipfile.is_zipfile(source)):
        try:
            with zipfile.ZipFile(source) as wheel:
                data = wheel.read(member)
        except KeyError:
            raise DataFormatError(source, f"no {member} in this wheel (expected mediapipe==0.10.14's)") from None
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
            raise DataFormatError(source, f"not a readable wheel, truncated? ({err})") from None
        return read_tflite(f"{source}:{member}", data)
    return read_tflite(source)
