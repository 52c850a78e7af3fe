"""Scorers give no number from nonsense (issue 28): Open Images submissions with non-finite scores,
reversed, NaN or far out-of-range boxes, RLE masks that do not cover the declared image, sizes that
would need gigabytes, broken base64 / zlib; an Open Images hierarchy with a self-loop, a cycle, wrong
types or 1,500 levels; Google-Landmarks NaN scores and a misspelt header; FGVC ids that are not in the
solution. Each is refused with the file (and line), by the readers and by the command lines, whose
error is one line on stderr with exit status 2. Ground truth comes from the generators' challenge
files or is written here in the published layouts."""

from __future__ import annotations

import base64
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from core.data import DataFormatError
from datamodules.openimages_files import CHALLENGE_FILES, Hierarchy, read_boxes
from datamodules.synthetic.openimages import generate_openimages
from tasks.fgvc import evaluate as fgvc_evaluate
from tasks.fgvc import protocol as fgvc_protocol
from tasks.landmarks import evaluate as landmarks_evaluate
from tasks.openimages import evaluate as openimages_evaluate
from tasks.openimages.protocol import DetectionAccumulator, ImageDetections, ImageGroundTruth
from tasks.openimages.submission import (
    MAX_IMAGE_PIXELS,
    encode_mask,
    read_detection_submission,
    read_segmentation_submission,
    rle_runs,
)

CLASSES = {"/m/a": 0, "/m/b": 1}


@pytest.fixture(scope="module")
def challenge(tmp_path_factory) -> Path:
    """The generator's challenge-2019 validation files (detection and segmentation)."""
    return generate_openimages(tmp_path_factory.mktemp("oi") / "oi", num_train=1, num_val=4, num_test=1)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- Open Images detection submissions ------------------------------------------------------------


@pytest.mark.parametrize(
    "group, problem",
    [
        ("/m/a nan 0.1 0.1 0.5 0.5", "score 'nan' is not a finite number"),
        ("/m/a -inf 0.1 0.1 0.5 0.5", "score '-inf' is not a finite number"),
        ("/m/a 0.9 0.1 nan 0.5 0.5", "box 1 (0.1 nan 0.5 0.5) is not finite"),
        ("/m/a 0.9 0.5 0.1 0.1 0.5", "box 1 (0.5 0.1 0.1 0.5) is reversed (xmin > xmax or ymin > ymax)"),
        ("/m/a 0.9 0.1 0.6 0.5 0.2", "box 1 (0.1 0.6 0.5 0.2) is reversed (xmin > xmax or ymin > ymax)"),
        (  # pixels instead of normalized coordinates: would silently score 0
            "/m/a 0.9 12 30 200 180",
            "box 1 (12 30 200 180) leaves the image by more than 0.5 (normalized coordinates in [0, 1] expected)",
        ),
    ],
)
def test_detection_submission_nonsense_names_the_line(tmp_path, group, problem):
    path = write(tmp_path / "sub.csv", f"ImageId,PredictionString\nimg0,/m/b 0.3 0 0 1 1\nimg1,{group}\n")
    with pytest.raises(DataFormatError) as err:
        read_detection_submission(path, CLASSES)
    assert str(err.value) == f"{path}:3: {problem}"


def test_detection_submission_keeps_loose_and_empty_boxes(tmp_path):
    """A box a little outside the image still scores, and an empty one is dropped when scored (the
    official rule): neither is refused."""
    path = write(
        tmp_path / "sub.csv",
        "ImageId,PredictionString\nimg1,/m/a 0.9 -0.02 0.1 1.03 0.5 /m/b 0.5 0.3 0.3 0.3 0.6\n",
    )
    got = read_detection_submission(path, CLASSES)["img1"]
    assert got.boxes.tolist() == [[-0.02, 0.1, 1.03, 0.5], [0.3, 0.3, 0.3, 0.6]]


def test_detection_cli_refuses_nan_scores_in_one_line(challenge, tmp_path, capsys):
    boxes = read_boxes(challenge / CHALLENGE_FILES["boxes"])[0]
    image_id, item = next(iter(boxes.items()))
    x1, y1, x2, y2 = item.boxes[0]
    sub = write(
        tmp_path / "sub.csv", f"ImageId,PredictionString\n{image_id},{item.labels[0]} nan {x1} {y1} {x2} {y2}\n"
    )
    code = openimages_evaluate.main([str(sub), "--annotations", str(challenge)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"error: {sub}:2: score 'nan' is not a finite number\n"


def test_protocol_refuses_non_finite_scores():
    """The numpy core the torchmetrics wrapper shares refuses them too: NaN has no rank."""
    acc = DetectionAccumulator(1)
    gt = ImageGroundTruth(np.array([0]), np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([False]), np.array([0]))
    det = ImageDetections(np.array([0, 0]), np.array([0.9, np.nan]), np.array([[0, 0, 1, 1], [0, 0, 1, 1.0]]))
    with pytest.raises(ValueError, match=r"^1 detection scores are not finite \(e\.g\. nan\); refusing to rank them$"):
        acc.add_image(gt, det)


# --- Open Images segmentation submissions --------------------------------------------------------


def mask_text(counts: bytes) -> str:
    return base64.b64encode(zlib.compress(counts)).decode("ascii")


SQUARE = np.zeros((10, 10), bool)
SQUARE[2:5, 3:7] = True


@pytest.mark.parametrize(
    "size, group, problem",
    [
        ("10,10", f"/m/a nan {encode_mask(SQUARE)}", "score 'nan' is not a finite number"),
        (  # the RLE of a 10 x 10 mask declared 12 x 10: pycocotools would decode it into the wrong shape
            "12,10",
            f"/m/a 0.9 {encode_mask(SQUARE)}",
            "detection 1: mask RLE covers 100 pixels, but the image is 12 x 10 = 120",
        ),
        (  # more pixels than declared: the C decoder would write past its buffer
            "5,5",
            f"/m/a 0.9 {encode_mask(SQUARE)}",
            "detection 1: mask RLE covers 100 pixels, but the image is 5 x 5 = 25",
        ),
        ("10,10", "/m/a 0.9 @@notbase64@@", "detection 1: mask is not base64 (Only base64 data is allowed)"),
        (
            "10,10",
            "/m/a 0.9 " + base64.b64encode(b"plain text").decode(),
            "detection 1: mask is not zlib-compressed RLE (Error -3 while decompressing data: incorrect header check)",
        ),
        ("10,10", "/m/a 0.9 " + mask_text(bytes([1, 2])), "RLE counts hold characters outside the COCO alphabet"),
        ("10,10", f"/m/a 0.9 {mask_text(b'3P')}", "RLE counts end inside a run"),  # 'P' = 32: more follow
        (  # 40 GB of bool per mask: refused before anything is allocated
            "200000,200000",
            f"/m/a 0.9 {encode_mask(SQUARE)}",
            f"image size 200000 x 200000 is over the limit of {MAX_IMAGE_PIXELS} pixels",
        ),
    ],
)
def test_segmentation_submission_nonsense_names_the_line(tmp_path, size, group, problem):
    path = write(
        tmp_path / "sub.csv", f"ImageID,ImageWidth,ImageHeight,PredictionString\nimg0,10,10,\nimg1,{size},{group}\n"
    )
    with pytest.raises(DataFormatError) as err:
        read_segmentation_submission(path, CLASSES)
    assert str(err.value).startswith(f"{path}:3: ")
    assert problem in str(err.value)


def test_rle_runs_read_by_hand():
    """COCO compressed RLE (maskApi rleToString) by hand, column-major runs of a 10 x 10 mask: runs
    3, 4, 93 are '3', '4', then 93 = 2 * 32 + 29 as 5-bit groups, low first: 29 | 0x20 (more follow)
    = 61 -> 'm', then 2 -> '2'. From the fourth run on a run is stored as its difference to the run
    two before: runs 3, 4, 90, 3 end with 90 -> 26 | 0x20 = 58 'j', 2 '2', and 3 - 4 = -1 -> 31 'O'
    (0x10 set in the last group: negative)."""
    assert rle_runs(b"34m2").tolist() == [3, 4, 93]
    assert rle_runs(b"34j2O").tolist() == [3, 4, 90, 3]


def test_segmentation_cli_refuses_an_oversized_image_in_one_line(challenge, tmp_path, capsys):
    sub = write(
        tmp_path / "sub.csv",
        "ImageID,ImageWidth,ImageHeight,PredictionString\n"
        f"0100000000000000,200000,200000,/m/0sy001 0.9 {encode_mask(SQUARE)}\n",
    )
    code = openimages_evaluate.main([str(sub), "--annotations", str(challenge), "--track", "segmentation"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {sub}:2: image size 200000 x 200000 is over the limit of {MAX_IMAGE_PIXELS} pixels\n"
    )


# --- Open Images hierarchy -----------------------------------------------------------------------


def node(name: str, *children: dict) -> dict:
    return {"LabelName": name, **({"Subcategory": list(children)} if children else {})}


@pytest.mark.parametrize(
    "tree, problem",
    [
        (
            node("/m/0bl9f", node("/m/animal", node("/m/animal"), node("/m/dog"))),
            "hierarchy node /m/0bl9f > /m/animal > /m/animal: a self-loop: it lists itself",
        ),
        (
            node("/m/0bl9f", node("/m/animal", node("/m/dog", node("/m/animal")))),
            "hierarchy node /m/0bl9f > /m/animal > /m/dog > /m/animal: a cycle: it is its own ancestor",
        ),
        (
            {"LabelName": "/m/0bl9f", "Subcategory": [{"LabelName": "/m/animal", "Subcategory": 5}]},
            "hierarchy node /m/0bl9f > /m/animal: Subcategory must be a list, found 5",
        ),
        (
            node("/m/0bl9f", node("/m/animal", {"LabelName": 7})),
            "hierarchy node /m/0bl9f > /m/animal > Subcategory[0]: LabelName 7 is not a class name",
        ),
        (
            node("/m/0bl9f", node("/m/animal", node("/m/dog"), "cat")),
            "hierarchy node /m/0bl9f > /m/animal > Subcategory[1] ('cat') has no 'LabelName'",
        ),
    ],
)
def test_hierarchy_is_validated_with_the_node_path(tmp_path, tree, problem):
    path = write(tmp_path / "hierarchy.json", json.dumps(tree))
    with pytest.raises(DataFormatError) as err:
        Hierarchy.read(path)
    assert str(err.value) == f"{path}: {problem}"


def test_deep_hierarchy_reads_without_recursion_error_and_a_deep_cycle_is_named(tmp_path):
    chain = node("/m/l1499")
    for i in range(1498, -1, -1):
        chain = node(f"/m/l{i}", chain)
    hierarchy = Hierarchy(node("/m/0bl9f", chain), "deep.json")  # 1,500 levels, walked without recursion
    assert len(hierarchy.ancestors["/m/l1499"]) == 1499 and len(hierarchy.descendants["/m/l0"]) == 1499
    deepest = chain
    while "Subcategory" in deepest:
        deepest = deepest["Subcategory"][0]
    deepest["Subcategory"] = [node("/m/l3")]  # back up to level 3: a cycle 1,500 levels down
    with pytest.raises(DataFormatError) as err:
        Hierarchy(node("/m/0bl9f", chain), "deep.json")
    assert str(err.value) == (
        "deep.json: hierarchy node /m/0bl9f > /m/l0 > ... (1497 more) > /m/l1498 > /m/l1499 > /m/l3: "
        "a cycle: it is its own ancestor"
    )
    # a file nested deeper than the JSON reader goes is one line naming the file, no RecursionError
    path = write(tmp_path / "deep.json", '{"LabelName": "/m/l", "Subcategory": [' * 1500 + "{}" + "]}" * 1500)
    with pytest.raises(DataFormatError) as err:
        Hierarchy.read(path)
    limit = sys.getrecursionlimit()
    assert str(err.value) == f"{path}: JSON nested too deeply for the reader (over about {limit} levels)"


def test_detection_cli_refuses_a_self_loop_in_the_challenge_hierarchy(challenge, tmp_path, capsys):
    root = tmp_path / "annotations"
    root.mkdir()
    for name in CHALLENGE_FILES.values():
        if (challenge / name).exists():
            (root / name).write_bytes((challenge / name).read_bytes())
    tree = json.loads((root / CHALLENGE_FILES["hierarchy"]).read_text())
    first = tree["Subcategory"][0]
    first.setdefault("Subcategory", []).append(node(first["LabelName"]))
    write(root / CHALLENGE_FILES["hierarchy"], json.dumps(tree))
    sub = write(tmp_path / "sub.csv", "ImageId,PredictionString\n")
    assert openimages_evaluate.main([str(sub), "--annotations", str(root)]) == 2
    name = first["LabelName"]
    assert capsys.readouterr().err == (
        f"error: {root / CHALLENGE_FILES['hierarchy']}: hierarchy node /m/0bl9f > {name} > {name}: "
        "a self-loop: it lists itself\n"
    )


# --- Google Landmarks ------------------------------------------------------------------------------


@pytest.fixture
def gld_solution(tmp_path) -> Path:
    """recognition_solution_v2.1.csv's layout: id,landmarks,Usage (empty landmarks: non-landmark)."""
    return write(
        tmp_path / "recognition_solution_v2.1.csv",
        "id,landmarks,Usage\n0001,10,Public\n0002,20,Private\n0003,,Public\n0004,30,Ignored\n",
    )


def test_landmarks_all_nan_scores_are_refused_not_gap_one(gld_solution, tmp_path, capsys):
    sub = write(tmp_path / "sub.csv", "id,landmarks\n0001,10 nan\n0002,99 nan\n0003,7 nan\n")
    code = landmarks_evaluate.main([str(sub), "--solution", str(gld_solution), "--track", "recognition"])
    assert code == 2
    assert capsys.readouterr().err == f"error: {sub}:2: score 'nan' is not a finite number\n"


def test_landmarks_submission_header_must_be_the_published_one(gld_solution, tmp_path, capsys):
    sub = write(tmp_path / "sub.csv", "id,landmark\n0001,10 0.9\n")
    code = landmarks_evaluate.main([str(sub), "--solution", str(gld_solution), "--track", "recognition"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: {sub}:1: header ['id', 'landmark']; expected ['id', 'landmarks'] (the recognition submission)\n"
    )


# --- FGVC graders ----------------------------------------------------------------------------------


def test_fgvc_submission_ids_not_in_the_solution_are_refused(tmp_path, capsys):
    solution = write(tmp_path / "solution.csv", "id,predicted\n1,5\n2,7\n")
    sub = write(tmp_path / "sub.csv", "id,predicted\n1,5\n2,7\n9999,5\n")
    with pytest.raises(ValueError) as err:
        fgvc_protocol.score_files(fgvc_protocol.competition("inaturalist2019"), sub, solution)
    assert str(err.value) == f"{sub}: 1 ids are not in the solution, e.g. ['9999']"
    assert fgvc_evaluate.main(["inaturalist2019", str(sub), str(solution)]) == 2
    assert capsys.readouterr().err == f"error: {sub}: 1 ids are not in the solution, e.g. ['9999']\n"
    write(sub, "id,predicted\n1,5\n2,3\n")
    assert fgvc_protocol.score_files(fgvc_protocol.competition("inaturalist2019"), sub, solution) == pytest.approx(0.5)
