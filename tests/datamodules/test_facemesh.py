"""The face-mesh generator writes the documented layout with exact labels, and the DataModule reads
it through the real loading path, with errors that name the file and entry. The faces speak MediaPipe's
canonical mesh, the default topology (`make mediapipe-models` writes it); the grid stays an option."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DataFormatError
from core.video import open_video
from datamodules.face_alignment import alignment_params, crop_matrix, transform_points
from datamodules.face_topology import face_topology
from datamodules.facemesh import FaceMeshDataModule
from datamodules.synthetic.facemesh import write_facemesh
from tests.helpers import mediapipe_topology_file

SMALL = dict(rendered=(5, 2, 2), annotated=(4, 2, 2), unlabeled=3, clip_frames=6, image_size=128, clip_size=96)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    topology = str(mediapipe_topology_file())
    return write_facemesh(tmp_path_factory.mktemp("fm") / "facemesh", seed=3, topology=topology, **SMALL)


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_generator_writes_the_documented_layout(root):
    topo = json.loads((root / "topology.json").read_text())
    assert topo["num_points"] == 468 and len(topo["triangles"]) == 852 and len(topo["keypoint_names"]) == 6
    assert topo["kind"] == "mediapipe" and topo["eye_corners"] == [33, 263] and len(topo["uv"]) == 468
    for source, counts in (("rendered", (5, 2, 2)), ("annotated", (4, 2, 2))):
        for split, count in zip(("train", "val", "test"), counts):
            ann = json.loads((root / source / split / "annotations.json").read_text())
            assert ann["style"] == source and len(ann["images"]) == count
            assert sorted(p.name for p in (root / source / split / "images").iterdir()) == [
                Path(e["file"]).name for e in ann["images"]
            ]
            for entry in ann["images"]:
                for face in entry["faces"]:
                    x0, y0, x1, y1 = face["box"]
                    kp = np.array(face["keypoints"])
                    assert kp.shape == (6, 2)
                    # eyes, nose and mouth lie inside the face box
                    assert ((kp[:4] >= [x0, y0]) & (kp[:4] <= [x1, y1])).all()
                    if source == "annotated":
                        assert {k: len(v) for k, v in face["contours"].items()} == {
                            k: len(v) for k, v in topo["contours"].items()
                        }
    pts = np.load(root / "rendered" / "train" / "points3d.npy")
    ann = json.loads((root / "rendered" / "train" / "annotations.json").read_text())
    rows = [f["points3d"] for e in ann["images"] for f in e["faces"]]
    assert pts.shape == (len(rows), 468, 3) and rows == list(range(len(rows)))
    assert len(list((root / "unlabeled" / "images").glob("*.png"))) == 3
    for clip in ("still", "moving"):
        labels = np.load(root / "clips" / f"{clip}.npz")
        assert labels["points3d"].shape == (6, 468, 3) and labels["keypoints"].shape == (6, 6, 2)
        assert len(open_video(root / "clips" / f"{clip}.mp4")) == 6
    still = np.load(root / "clips" / "still.npz")["points3d"]
    assert np.abs(still - still[0]).max() == 0.0  # the still head does not move
    assert np.abs(np.diff(np.load(root / "clips" / "moving.npz")["points3d"], axis=0)).max() > 1.0


def test_generator_is_reproducible(root, tmp_path):
    again = write_facemesh(tmp_path / "again", seed=3, topology=str(mediapipe_topology_file()), **SMALL)
    for rel in ("rendered/train/annotations.json", "annotated/val/annotations.json"):
        assert (again / rel).read_text() == (root / rel).read_text()
    np.testing.assert_array_equal(
        np.load(again / "rendered/train/points3d.npy"), np.load(root / "rendered/train/points3d.npy")
    )


def test_datamodule_reads_the_layout_and_aligns_crops(root):
    dm = FaceMeshDataModule(str(root), crop_size=96, batch_size=3)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["det_image"].shape == (3, 3, 128, 128) and batch["crop"].shape == (3, 3, 96, 96)
    loader_ids = torch.cat([b["image_id"] for b in dm.val_dataloader()]).tolist()
    assert loader_ids == list(range(4))  # rendered val 0-1, annotated val 2-3: unique ids
    # the first rendered val face: crop targets = its points3d through the keypoint alignment
    rec = dm.records("rendered", "val")[0]
    face = rec.faces[0]
    m = crop_matrix(*alignment_params(torch.from_numpy(face.box), torch.from_numpy(face.keypoints), 1.5), 96)
    expected = transform_points(torch.from_numpy(face.points), m) / 96
    torch.testing.assert_close(batch["points"][0], expected.float(), atol=1e-5, rtol=1e-5)
    assert batch["point_mask"][0].all() and batch["has_z"][0] == 1 and batch["face"][0] == 1
    # detector targets: boxes in letterboxed [0, 1] coordinates (128 px images: scale 1)
    torch.testing.assert_close(batch["det_boxes"][0, 0], torch.from_numpy(face.box) / 128)
    # annotated faces: only the contour points are targets, without z
    ann = dm.dataset(dm.records("annotated", "val"), False)[0]
    contour = dm.topology.contour_indices
    assert dm.topology.kind == "mediapipe" and len(contour) < 468
    assert ann["point_mask"].sum() == len(contour) and ann["point_mask"][contour].all() and ann["has_z"] == 0


def test_negative_crops_and_pseudo_labels_join_training(root):
    dm = FaceMeshDataModule(str(root), crop_size=64, batch_size=4, negative_fraction=1.0)
    dm.setup()
    sample = dm.dataset(dm.records("rendered", "train"), True)[0]
    assert sample["face"] == 0 and not sample["point_mask"].any()
    before = len(dm.train_dataset())
    assert before == 9
    dm.set_pseudo_labels(dm.records("rendered", "val"))
    assert len(dm.train_dataset()) == before + 2
    assert len(dm.unlabeled_images()) == 3 and set(dm.clips()) == {"still", "moving"}


def test_bad_annotations_name_the_file_and_entry(root, tmp_path):
    copy = _copy(root, tmp_path)
    path = copy / "rendered" / "train" / "annotations.json"
    data = json.loads(path.read_text())
    del data["images"][0]["faces"][0]["keypoints"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"annotations.json: images\[0\].faces\[0\]: needs 'box' and 'keypoints'"):
        FaceMeshDataModule(str(copy)).setup()

    data["images"][0]["faces"][0]["keypoints"] = [[1, 2]] * 5
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"keypoints: expected shape \(6, 2\), got \(5, 2\)"):
        FaceMeshDataModule(str(copy)).setup()

    data["images"][0]["faces"][0]["keypoints"] = [[1, 2]] * 6
    data["images"][0]["faces"][0]["points3d"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="999 is not a row of points3d.npy"):
        FaceMeshDataModule(str(copy)).setup()

    path.write_text('{"images": [\n  {"file": }\n]}')
    with pytest.raises(DataFormatError, match=r"annotations.json:2: not valid JSON"):
        FaceMeshDataModule(str(copy)).setup()


def test_wrong_point_count_and_missing_files(root, tmp_path):
    with pytest.raises(DataFormatError, match=r"topology.json: the data set has 468 mesh points but num_points=120"):
        FaceMeshDataModule(str(root), num_points=120).setup()
    copy = _copy(root, tmp_path)
    (copy / "rendered" / "val" / "images" / "000001.png").unlink()
    dm = FaceMeshDataModule(str(copy))
    dm.setup()
    with pytest.raises(FileNotFoundError, match="000001.png"):
        dm.dataset(dm.records("rendered", "val"), False)[1]
    with pytest.raises(FileNotFoundError, match="data set not found"):
        FaceMeshDataModule(str(tmp_path / "nothing")).setup()


def test_generated_on_first_use_in_the_grid_topology_too(tmp_path):
    dm = FaceMeshDataModule(
        str(tmp_path / "fm"),
        generator=partial(
            write_facemesh, rendered=(2, 1, 1), annotated=(1, 1, 1), unlabeled=0, clip_frames=0, image_size=96
        ),
    )
    dm.prepare_data()
    dm.setup()
    assert len(dm.records("rendered", "train")) == 2 and dm.clips() == {}
    assert dm.topology.kind == "grid" and (dm.topology.rows, dm.topology.cols) == (18, 26)
    assert len(dm.topology.triangles) == len(face_topology(468).triangles) == 850


def test_a_missing_topology_file_names_the_make_target(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"face_topology.json: no face-mesh topology file; .* `make mediapipe-models`"
    ):
        write_facemesh(tmp_path / "fm", topology=str(tmp_path / "mediapipe" / "face_topology.json"))
