"""Face mesh on a user's images (predict.py task=facemesh): per image ``<name>/mesh.png`` (the image
with every face's mesh drawn), ``<name>/mesh.obj`` (the first face's mesh) and
``<name>/landmarks.json``; for the whole set ``landmarks.json`` (every image's faces: box, 6
keypoints, scores, N 3D points in pixels). Videos: ``python -m tasks.facemesh.run <video>``
(tracking and smoothing need the frames in order, one video at a time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.io import atomic_path, atomic_write_json
from core.prediction import ProductWriter
from tasks.facemesh.pipeline import draw_mesh, write_obj
from tasks.facemesh.runtime import check_runtime

MESH_IMAGE = "mesh.png"
MESH_OBJ = "mesh.obj"
LANDMARKS = "landmarks.json"


class FaceMeshProduct(ProductWriter):
    """Meshes of every face in each image (module docstring); points in the image's own pixels."""

    input_kind = "images"

    def __init__(self, runtime: str | None = None) -> None:
        """``runtime``: what runs the networks, ``onnxruntime`` or ``torch`` (None: ONNX Runtime where
        installed; tasks/facemesh/runtime.py)."""
        super().__init__()
        self.topology = None
        self.runtime = check_runtime(runtime) if runtime else None

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        self.topology = task.topology
        task.inference_runtime = self.runtime  # the task's predict_step runs the pipeline in it

    def prepare(self, image) -> dict[str, Any]:
        rgb = np.asarray(image.convert("RGB"))
        return {"image": rgb}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {"image": [s["image"] for s in samples]}  # sizes differ: a list, not a tensor

    def write_item(self, run_dir: Path, name: str, prediction: list[dict], batch: dict, index: int) -> dict:
        folder = Path(run_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        image = batch["image"][index]
        drawn = image
        for face in prediction:
            drawn = draw_mesh(
                drawn,
                np.asarray(face["points"]),
                self.topology,
                keypoints=np.asarray(face["keypoints"]),
                box=np.asarray(face["box"]),
            )
        with atomic_path(folder / MESH_IMAGE) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        files = [f"{name}/{MESH_IMAGE}", f"{name}/{LANDMARKS}"]
        if prediction:
            write_obj(folder / MESH_OBJ, np.asarray(prediction[0]["points"]), self.topology)
            files.append(f"{name}/{MESH_OBJ}")
        atomic_write_json(folder / LANDMARKS, {"faces": prediction}, indent=None)
        return {"faces": prediction, "files": files}

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        atomic_write_json(
            Path(run_dir) / LANDMARKS,
            {
                "num_points": self.topology.num_points if self.topology is not None else None,
                "images": [{"input": r["input"], "name": r["name"], "faces": r["faces"]} for r in records],
            },
            indent=None,
        )
        return {"landmarks": LANDMARKS, "faces": sum(len(r["faces"]) for r in records)}
