"""Face mesh on a user's images or videos (predict.py task=facemesh; ``python -m tasks.facemesh.run`` is a
thin wrapper over this writer). Per input, under ``<name>/``:

- ``landmarks.json``: per frame (one for an image), every face's box, 6 keypoints, scores and points (x, y,
  z pixels; z smaller = nearer, relative to the head centre); ``landmarks.npz``: ``points`` (frames, faces,
  N, 3) with NaN where a face is absent, ``boxes``, ``keypoints``, ``scores``, ``face_probs``, ``fps``,
  ``triangles``;
- ``mesh.png`` (an image with every face's mesh drawn) or ``mesh.mp4`` (a video with the tracked mesh);
- ``mesh.obj``: the mesh of one frame (the first with a face, or ``obj_frame``).

For the whole set, ``landmarks.json``: every image's faces (or every video's frame counts). Images: every
face the detector finds. Videos (``product.kind=videos``): one face tracked from frame to frame as in the
paper (the crop follows the previous mesh, the detector re-runs when the face flag drops), one-euro
smoothed unless ``smoothing`` is false."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.io import atomic_path, atomic_write_json
from core.prediction import ProductWriter
from tasks.facemesh.pipeline import draw_mesh, write_obj
from tasks.facemesh.runtime import check_runtime

LANDMARKS = "landmarks.json"
LANDMARK_ARRAYS = "landmarks.npz"
INPUT_KINDS = ("images", "videos")


def read_video_frames(path: Path, max_frames: int | None) -> tuple[np.ndarray, float]:
    """The first ``max_frames`` frames (all when None) of a video as RGB uint8 (T, H, W, 3), and its fps."""
    from core.video import open_video, read_frames

    reader = open_video(path)
    n = len(reader) if max_frames is None else min(len(reader), max_frames)
    fps = float(reader.get_avg_fps())
    chunks = [read_frames(reader, range(s, min(s + 64, n)), path) for s in range(0, n, 64)]  # bounded decode calls
    if not chunks:
        raise ValueError(f"{path}: the video holds no frame")
    return np.concatenate(chunks), fps


def landmark_arrays(frames_faces: list[list[dict]], num_points: int) -> dict[str, np.ndarray]:
    """Per-frame faces as arrays padded with NaN to the most faces in a frame."""
    most = max([len(f) for f in frames_faces] + [1])
    t = len(frames_faces)
    arrays = {
        "points": np.full((t, most, num_points, 3), np.nan, np.float32),
        "boxes": np.full((t, most, 4), np.nan, np.float32),
        "keypoints": np.full((t, most, 6, 2), np.nan, np.float32),
        "scores": np.full((t, most), np.nan, np.float32),
        "face_probs": np.full((t, most), np.nan, np.float32),
    }
    for i, faces in enumerate(frames_faces):
        for j, face in enumerate(faces):
            arrays["points"][i, j] = face["points"]
            arrays["boxes"][i, j], arrays["keypoints"][i, j] = face["box"], face["keypoints"]
            arrays["scores"][i, j], arrays["face_probs"][i, j] = face["score"], face["face_prob"]
    return arrays


def rounded(face: dict) -> dict:
    """A face for JSON: coordinates to 1/100 px."""
    return {
        k: np.round(np.asarray(v), 2).tolist() if k in ("points", "box", "keypoints") else v for k, v in face.items()
    }


class FaceMeshProduct(ProductWriter):
    """Meshes of every face in each image, or of the face tracked through each video (module docstring);
    points in the input's own pixels.

    ``mesh_name`` is the stem of the drawn mesh and OBJ files (``mesh``); the run command names them after
    the input (``<stem>_mesh``)."""

    mesh_name = "mesh"

    def __init__(
        self,
        runtime: str | None = None,
        input_kind: str = "images",
        smoothing: bool = True,
        max_frames: int | None = None,
        obj_frame: int | None = None,
    ) -> None:
        """``runtime``: what runs the networks, ``onnxruntime`` or ``torch`` (None: ONNX Runtime where
        installed; tasks/facemesh/runtime.py). ``input_kind``: ``images`` or ``videos``. Videos:
        ``smoothing`` (one-euro), ``max_frames`` (only the first N). ``obj_frame``: the frame whose mesh
        goes to the OBJ (default: the first with a face)."""
        super().__init__()
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"product.writer.input_kind={input_kind!r}: expected one of {', '.join(INPUT_KINDS)}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames={max_frames}: expected at least 1")
        self.input_kind = input_kind
        self.smoothing, self.max_frames, self.obj_frame = smoothing, max_frames, obj_frame
        self.topology = None
        self.runtime = check_runtime(runtime) if runtime else None

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        self.topology = task.topology
        task.inference_runtime = self.runtime  # the task's predict_step runs the pipeline in it

    def prepare(self, decoded) -> dict[str, Any]:
        """A PIL image (ImageInputs) -> its RGB array; a video's path (VideoInputs) -> its frames and fps."""
        if isinstance(decoded, (str, Path)):
            frames, fps = read_video_frames(Path(decoded), self.max_frames)
            return {"video": frames, "fps": fps}
        return {"image": np.asarray(decoded.convert("RGB"))}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Images as a list (sizes differ); videos as lists of frames and fps, with the smoothing switch."""
        if samples and "video" in samples[0]:
            return {
                "video": [s["video"] for s in samples],
                "fps": [s["fps"] for s in samples],
                "smoothing": self.smoothing,
            }
        return {"image": [s["image"] for s in samples]}

    def write_item(self, run_dir: Path, name: str, prediction: list, batch: dict, index: int) -> dict:
        folder = Path(run_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        source = batch["inputs"][index]
        if "video" in batch:
            per_frame, fps = prediction, batch["fps"][index]
            drawn = self.write_mesh_video(folder, batch["video"][index], per_frame, fps)
        else:
            per_frame, fps = [prediction], None
            drawn = self.write_mesh_image(folder, batch["image"][index], prediction)
        with_face = [i for i, faces in enumerate(per_frame) if faces]
        chosen = self.obj_frame if self.obj_frame is not None else (with_face[0] if with_face else None)
        if chosen is not None and (chosen >= len(per_frame) or chosen < 0 or not per_frame[chosen]):
            raise ValueError(
                f"{source}: obj_frame {chosen}: no face in that frame (faces in {len(with_face)} of {len(per_frame)} "
                "frames)"
            )
        self.write_landmarks(folder, source, per_frame, fps)
        files = [f"{name}/{LANDMARKS}", f"{name}/{LANDMARK_ARRAYS}", f"{name}/{drawn}"]
        if chosen is not None:
            write_obj(folder / f"{self.mesh_name}.obj", np.asarray(per_frame[chosen][0]["points"]), self.topology)
            files.append(f"{name}/{self.mesh_name}.obj")
        record = {
            "frames": len(per_frame),
            "frames_with_face": len(with_face),
            "faces": sum(len(f) for f in per_frame),
            "obj_frame": chosen,
            "files": files,
        }
        if "video" not in batch:
            record["face_list"] = [rounded(face) for face in prediction]  # the merged landmarks.json's entry
        return record

    def write_mesh_image(self, folder: Path, image: np.ndarray, faces: list[dict]) -> str:
        drawn = image
        for face in faces:
            drawn = draw_mesh(
                drawn,
                np.asarray(face["points"]),
                self.topology,
                keypoints=np.asarray(face["keypoints"]),
                box=np.asarray(face["box"]),
            )
        with atomic_path(folder / f"{self.mesh_name}.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        return f"{self.mesh_name}.png"

    def write_mesh_video(self, folder: Path, frames: np.ndarray, per_frame: list[list[dict]], fps: float) -> str:
        from core.video import write_video

        def drawn():
            for frame, faces in zip(frames, per_frame):
                for face in faces:
                    frame = draw_mesh(frame, np.asarray(face["points"]), self.topology)
                h, w = frame.shape[:2]
                yield frame[: h - h % 2, : w - w % 2]  # even size for yuv420p

        write_video(folder / f"{self.mesh_name}.mp4", drawn(), fps=fps)
        return f"{self.mesh_name}.mp4"

    def write_landmarks(self, folder: Path, source: str, per_frame: list[list[dict]], fps: float | None) -> None:
        arrays = landmark_arrays(per_frame, self.topology.num_points)
        with atomic_path(folder / LANDMARK_ARRAYS) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, **arrays, fps=np.float32(fps or 0.0), triangles=np.asarray(self.topology.triangles, np.int32)
            )
        frames = [{"frame": i, "faces": [rounded(face) for face in faces]} for i, faces in enumerate(per_frame)]
        document = {"input": source, "fps": fps, "num_points": self.topology.num_points, "frames": frames}
        atomic_write_json(folder / LANDMARKS, document, indent=None)

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.input_kind == "videos":
            entries = {"videos": [{k: r[k] for k in ("input", "name", "frames", "frames_with_face")} for r in records]}
        else:
            entries = {"images": [{"input": r["input"], "name": r["name"], "faces": r["face_list"]} for r in records]}
        num_points = self.topology.num_points if self.topology is not None else None
        atomic_write_json(Path(run_dir) / LANDMARKS, {"num_points": num_points, **entries}, indent=None)
        return {"landmarks": LANDMARKS, "faces": sum(r["faces"] for r in records)}
