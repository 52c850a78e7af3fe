"""The GLDv2 readers on the published headers, their errors (file and line), the image layout
<split>/a/b/c/<id>.jpg, and the generated set read back through the DataModule."""

from __future__ import annotations

import pytest

from core.data import DataFormatError
from datamodules.gldv2 import (
    GLDv2DataModule,
    image_path,
    read_boxes,
    read_ids,
    read_train,
    read_train_clean,
)
from datamodules.gldv2_files import read_solution
from datamodules.synthetic.gldv2 import write_gldv2

# The overrides of a small generated copy of each data set, for every test that trains on it
# (tests/conftest.py gathers them into SMALL_DATA and the small_data fixture).
SMALL_DATA: dict[str, list[str]] = {
    "gldv2": [
        "data=gldv2",
        "data.generator.num_landmarks=5",
        "data.generator.train_per_landmark=6",
        "data.generator.index_per_landmark=2",
        "data.generator.test_per_landmark=2",
        "data.generator.index_distractors=3",
        "data.generator.test_distractors=3",
        "data.image_size=64",
        "data.batch_size=8",
    ],
}


def write(path, text):
    path.write_text(text)
    return path


def test_readers_on_the_published_headers(tmp_path):
    train = write(
        tmp_path / "train.csv",
        "id,url,landmark_id\n"
        "6e158a47eb2ca3f6,https://upload.wikimedia.org/wikipedia/commons/b/b5/Observatory.jpg,142820\n"
        "202cd79556f30760,http://upload.wikimedia.org/wikipedia/commons/6/63/Ecosse.jpg,104169\n",
    )
    assert read_train(train) == [("6e158a47eb2ca3f6", 142820), ("202cd79556f30760", 104169)]
    clean = write(tmp_path / "train_clean.csv", "landmark_id,images\n1,17660ef415d37059 92b6290d571448f6\n")
    assert read_train_clean(clean) == [("17660ef415d37059", 1), ("92b6290d571448f6", 1)]
    index = write(tmp_path / "index.csv", "id\n0000059611c7d079\n")
    assert read_ids(index, "index.csv") == ["0000059611c7d079"]
    boxes = write(tmp_path / "boxes_split1.csv", "id,box\n6e158a47eb2ca3f6,0.1 0.2 0.9 0.8\n")
    assert read_boxes(boxes) == {"6e158a47eb2ca3f6": [(0.2, 0.1, 0.8, 0.9)]}  # x1 y1 x2 y2
    solution = write(
        tmp_path / "recognition_solution_v2.1.csv",
        "id,landmarks,Usage\n00cba0067c078490,,Private\n00d9a7c5c0a4a1b0,153298 3,Public\n0a3b0ef2cbdb5c34,1,Ignored\n",
    )
    parts, ignored = read_solution(solution, "recognition")
    assert parts == {"Public": {"00d9a7c5c0a4a1b0": [153298, 3]}, "Private": {"00cba0067c078490": []}}
    assert ignored == {"0a3b0ef2cbdb5c34"}
    assert image_path(tmp_path, "train", "6e158a47eb2ca3f6") == tmp_path / "train/6/e/1/6e158a47eb2ca3f6.jpg"


def test_train_csv_of_the_2020_and_2021_releases(tmp_path):
    # landmark-recognition-2020/2021 train.csv has no url column: "id,landmark_id". Rows: landmark 1's two
    # images as train_clean.csv lists them ("1,17660ef415d37059 92b6290d571448f6"); 17660ef415d37059 is the first
    # row of the 2021 release's train.csv.
    train = write(tmp_path / "train.csv", "id,landmark_id\n17660ef415d37059,1\n92b6290d571448f6,1\n")
    assert read_train(train) == [("17660ef415d37059", 1), ("92b6290d571448f6", 1)]


@pytest.mark.parametrize(
    "name, text, reader, problem, line",
    [
        ("train.csv", "id,url,landmark_id\nabc123,u,7\nabc124,u,seven\n", read_train, "landmark_id 'seven'", 3),
        ("train.csv", "id,url,landmark_id\nabc123,u\n", read_train, "2 fields; expected 3", 2),
        ("train.csv", "id,landmark\nabc123,7\n", read_train, "id,url,landmark_id or id,landmark_id", 1),
        ("train.csv", "id,landmark_id\nabc123,7,8\n", read_train, "3 fields; expected 2", 2),
        ("train.csv", "id,url,landmark_id\n../x,u,7\n", read_train, "not an alphanumeric id", 2),
        ("boxes_split2.csv", "id,box\nabc123,0.1 0.2 0.9\n", read_boxes, "4 numbers", 2),
        ("boxes_split2.csv", "id,box\nabc123,0.9 0.2 0.1 0.8\n", read_boxes, "top<bottom", 2),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, name, text, reader, problem, line):
    path = write(tmp_path / name, text)
    with pytest.raises(DataFormatError, match=problem) as err:
        reader(path)
    assert err.value.path == path and err.value.line == line


SMALL = dict(
    num_landmarks=5,
    train_per_landmark=4,
    index_per_landmark=2,
    test_per_landmark=2,
    index_distractors=3,
    test_distractors=2,
    image_size=48,
)


def test_generated_set_through_the_datamodule(tmp_path):
    root = write_gldv2(tmp_path / "gldv2", **SMALL)
    dm = GLDv2DataModule(str(root), num_classes=5, image_size=48, batch_size=4, num_workers=0, val_fraction=0.25)
    dm.setup()
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == len(dm.datasets["gallery_train"]) == 20
    assert len(dm.ids["index"]) == 5 * 2 + 3 and len(dm.ids["test"]) == 5 * 2 + 2
    assert dm.landmark_ids == sorted(dm.landmark_ids) and len(dm.class_names) == 5
    recognition, ignored = dm.solutions["recognition"]
    assert len(ignored) == 1 and sum(len(part) for part in recognition.values()) == len(dm.ids["test"]) - 1
    # The two distractor queries are non-landmarks (empty landmarks) unless one is the Ignored row.
    non_landmarks = [q for part in recognition.values() for q, v in part.items() if not v]
    assert len(non_landmarks) in (1, 2) and all(q in set(dm.ids["test"]) for q in non_landmarks)
    retrieval, _ = dm.solutions["retrieval"]
    index = set(dm.ids["index"])
    assert all(set(v) <= index and len(v) == 2 for part in retrieval.values() for v in part.values())
    boxed = [b for b in dm.datasets["gallery_train"].boxes if b]
    # Detector training boxes (split 1) and held-out ones (split 2) never share an image.
    assert dm.validation_boxes and not any(dm.datasets["gallery_train"].boxes[n] for n in dm.validation_boxes)
    assert boxed and all(0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 for b in boxed for x1, y1, x2, y2 in b)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 48, 48) and len(batch["boxes"]) == 4
    # The same landmark id in train.csv and the recognition solution
    assert {v[0] for part in recognition.values() for v in part.values() if v} <= set(dm.landmark_ids)


def test_missing_image_and_wrong_class_count_are_named(tmp_path):
    root = write_gldv2(tmp_path / "gldv2", **SMALL)
    with pytest.raises(DataFormatError, match=r"train.csv: 5 landmarks, but data.num_classes=6"):
        GLDv2DataModule(str(root), num_classes=6).setup()
    dm = GLDv2DataModule(str(root), num_classes=5, image_size=48, num_workers=0)
    dm.setup()
    missing = dm.datasets["index"].paths[0]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=f"{missing}: image listed in the split.s CSV does not exist"):
        dm.datasets["index"][0]
