"""The networks imported from MediaPipe (BlazeFace, the face mesh, the selfie segmenter), exported to
ONNX Runtime by core/onnx_runtime.py, equal their PyTorch reference; the face-mesh pipeline gives the
same points through either. The benchmark (benchmarks/bench_facemesh.py --runtimes) times them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from core.onnx_runtime import OnnxRuntimeModule, runtime_friendly
from core.tf_layers import SameConv2d
from tests.helpers import mediapipe_wheel

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def facemesh_task(tmp_path_factory):
    from core.checkpoint import load_task
    from tasks.facemesh.import_mediapipe import import_mediapipe
    from tasks.facemesh.module import FaceMeshTask

    ckpt = import_mediapipe([mediapipe_wheel()], tmp_path_factory.mktemp("mediapipe") / "facemesh.ckpt")
    return load_task(ckpt, FaceMeshTask).eval()


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from tasks.people_depth.import_segmenter import import_segmenter
    from tasks.people_depth.segmenter import load_segmenter

    return load_segmenter(import_segmenter(mediapipe_wheel(), tmp_path_factory.mktemp("seg") / "seg.pt"))


def inputs(size: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """Random tensors and a real photograph (scikit-image's astronaut), as [0, 1] NCHW batches."""
    photo = torch.nn.functional.interpolate(
        torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1)[None].float() / 255, size=(size, size)
    )
    return {
        "uniform": torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)),
        "photograph": photo.expand(batch, -1, -1, -1).contiguous(),
    }


def assert_equal_to_reference(
    reference: torch.nn.Module, size: int, batch: int, tmp_path, exported: torch.nn.Module | None = None
) -> None:
    runtime = OnnxRuntimeModule(reference, folder=tmp_path, exported=exported)
    for name, x in inputs(size, batch).items():
        with torch.no_grad():
            want = reference(x)
        got = runtime(x)
        assert isinstance(got, tuple) == isinstance(want, tuple)  # the module's own return type
        want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
        for w, g in zip(want, got):
            assert g.shape == w.shape
            # 1e-3 in pixels, logits and probabilities; a value far from 0 (a background anchor's logit
            # reaches -400) also carries float32's rounding of its size, 1e-5 of it.
            np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-3, rtol=1e-5, err_msg=name)
    assert (tmp_path / f"{batch}x3x{size}x{size}.onnx").exists()


def test_blazeface_export_equals_pytorch(facemesh_task, tmp_path):
    assert_equal_to_reference(facemesh_task.detector, 128, 1, tmp_path)


def test_widened_blazeface_is_the_same_function_in_blocked_widths(facemesh_task, tmp_path):
    """The detector ONNX Runtime gets (tasks.facemesh.runtime.inference_network) has widths that are multiples
    of 16 and gives the published network's outputs exactly in PyTorch, and to 1e-3 once exported."""
    detector = facemesh_task.detector
    wide = detector.widened(16)
    widths = [w for w, _ in detector.units_spec]
    assert widths[1] == 28 and [w for w, _ in wide.units_spec] == [-(-w // 16) * 16 for w in widths]
    for x in inputs(128, 2).values():
        with torch.no_grad():
            for w, g in zip(detector(x), wide(x)):
                assert torch.equal(g, w)  # the added channels are zero all the way through
    assert_equal_to_reference(detector, 128, 1, tmp_path, exported=wide)


def test_an_export_that_is_not_the_same_function_is_refused(facemesh_task, tmp_path):
    other = facemesh_task.detector.widened(16)
    with torch.no_grad():
        other.cls8.bias.add_(1.0)  # every 8x8 anchor's logit moves by 1
    runtime = OnnxRuntimeModule(facemesh_task.detector, folder=tmp_path, exported=other)
    with pytest.raises(RuntimeError, match="output 0 differs from the PyTorch module by 1"):
        runtime(torch.rand(1, 3, 128, 128))


def test_face_mesh_export_equals_pytorch_for_one_and_several_crops(facemesh_task, tmp_path):
    assert_equal_to_reference(facemesh_task.mesh, 192, 1, tmp_path)
    assert_equal_to_reference(facemesh_task.mesh, 192, 3, tmp_path)


def test_segmenter_export_equals_pytorch(segmenter, tmp_path):
    assert_equal_to_reference(segmenter, 256, 1, tmp_path)


def test_runtime_friendly_layers_compute_the_same_function(facemesh_task):
    """The rewrite ONNX Runtime gets (PReLU as two 1x1 depthwise products, SAME padding fixed) is the
    same function in PyTorch already, and really replaced the layers."""
    x = inputs(192)["photograph"]
    friendly = runtime_friendly(facemesh_task.mesh, x)
    assert not any(isinstance(m, torch.nn.PReLU) for m in friendly.modules())
    assert not any(isinstance(m, SameConv2d) for m in friendly.modules())
    with torch.no_grad():
        for w, g in zip(facemesh_task.mesh(x), friendly(x)):
            np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-4, rtol=1e-5)


def test_pipeline_through_onnx_runtime_gives_the_pytorch_points(facemesh_task):
    from tasks.facemesh.pipeline import FaceMeshPipeline

    photo = skimage_data.astronaut()
    reference = FaceMeshPipeline.from_task(facemesh_task)
    runtime = FaceMeshPipeline.from_task(facemesh_task)
    runtime.detector = OnnxRuntimeModule(facemesh_task.detector)
    runtime.mesh = OnnxRuntimeModule(facemesh_task.mesh)
    want, got = reference.process_image(photo), runtime.process_image(photo)
    assert len(want) == len(got) == 1
    assert runtime.mesh.sessions and runtime.mesh_param is next(facemesh_task.mesh.parameters())
    np.testing.assert_allclose(got[0].points, want[0].points, atol=1e-2)
    np.testing.assert_allclose(got[0].box, want[0].box, atol=1e-2)
