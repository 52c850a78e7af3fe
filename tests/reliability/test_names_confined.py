"""Names read from data files stay inside their folder (issue 28): the iNaturalist COCO JSON
``file_name``, Open Images ``ImageID`` (boxes, image-level labels, segmentation rows), the iWildCam
``file_name``, iFood rows, the face-mesh ``annotations.json`` ``file`` (and the iMaterialist ``id``) go through
core.data.resolve_inside, so ``..`` or an absolute path is refused with the file and line, though the
file it points at exists. Each reader is fed the files its generator wrote, with one name changed."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from core.data import DataFormatError
from datamodules.facemesh import FaceMeshDataModule
from datamodules.ifood2019 import IFood2019DataModule
from datamodules.imaterialist_product2019 import IMaterialistProduct2019DataModule
from datamodules.inaturalist2019 import INaturalist2019DataModule
from datamodules.iwildcam2019 import IWildCam2019DataModule
from datamodules.openimages import OpenImagesDetectionDataModule, OpenImagesSegmentationDataModule
from datamodules.synthetic import fgvc as gen
from datamodules.synthetic.facemesh import write_facemesh
from datamodules.synthetic.openimages import generate_openimages

FGVC_SMALL = dict(num_classes=8, max_per_class=6, imbalance=3.0, test_total=8, image_size=16)
LOADER = dict(image_size=16, batch_size=4, num_workers=0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("confined")


def copy_of(source: Path, tmp_path: Path) -> Path:
    dst = tmp_path / source.name
    shutil.copytree(source, dst)
    return dst


@pytest.fixture
def outside(tmp_path) -> Path:
    """A real image outside every data set's folder: only the name check keeps a reader from it."""
    secret = tmp_path / "secret" / "photo.jpg"
    secret.parent.mkdir()
    secret.write_bytes(b"not to be read")
    return secret


def escape_name(kind: str, folder: Path, target: Path) -> str:
    """``target`` named from ``folder`` by climbing with ``..``, or by its absolute path."""
    if kind == "absolute":
        return str(target)
    depth = len(folder.relative_to(target.parent.parent).parts)
    return "/".join([".."] * depth + [target.parent.name, target.name])


def expected_problem(kind: str, name: str, folder: Path) -> str:
    if kind == "absolute":
        return f"name {name!r} is empty or an absolute path, not a name inside {folder}; refused"
    return f"name {name!r} steps out of {folder} with '..'; refused"


def line_holding(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def generated_copy(generated: Path, tmp_path: Path, name: str, writer, **kwargs) -> Path:
    """A copy (to spoil) of the data set ``writer`` writes, generated once per module."""
    if not (generated / name).exists():
        writer(generated / name, **kwargs)
    return copy_of(generated / name, tmp_path)


def put_name(path: Path, index: int, key: str, name: str) -> int:
    """Set ``images[index][key] = name`` in a JSON file, rewritten one key per line so the line
    that holds the name means something; returns that line."""
    record = json.loads(path.read_text())
    record["images"][index][key] = name
    path.write_text(json.dumps(record, indent=1))
    return line_holding(path, json.dumps(name))


# --- iNaturalist 2019: COCO JSON file_name -------------------------------------------------------


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
@pytest.mark.parametrize("split_file", ["val2019.json", "test2019.json"])
def test_inaturalist_file_name_outside_root_is_refused(generated, tmp_path, outside, kind, split_file):
    root = generated_copy(generated, tmp_path, "inat", gen.write_inaturalist2019, **FGVC_SMALL)
    path = root / split_file
    name = escape_name(kind, root, outside)
    line = put_name(path, 1, "file_name", name)
    with pytest.raises(DataFormatError) as err:
        INaturalist2019DataModule(str(root), 8, **LOADER).setup("fit")
    assert str(err.value) == f"{path}:{line}: {expected_problem(kind, name, root)}"


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_imaterialist_id_outside_its_folder_is_refused(generated, tmp_path, outside, kind, split):
    """Not named in the issue, the same join: an iMaterialist id is the image's file name."""
    root = generated_copy(generated, tmp_path, "imat", gen.write_imaterialist_product2019, **FGVC_SMALL)
    path = root / f"{split}.json"
    name = escape_name(kind, root / split, outside)
    line = put_name(path, 1, "id", name)
    with pytest.raises(DataFormatError) as err:
        IMaterialistProduct2019DataModule(str(root), 8, **LOADER).setup("fit")
    assert str(err.value) == f"{path}:{line}: {expected_problem(kind, name, root / split)}"


# --- Open Images: ImageID of the box, image-label and segmentation files ----------------------


@pytest.fixture(scope="module")
def openimages(generated) -> Path:
    return generate_openimages(generated / "openimages", num_train=3, num_val=3, num_test=1)


def append_row(path: Path, change: dict[str, str]) -> int:
    """Append a copy of the file's first data row with ``change`` applied; returns its line."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    row = {**rows[0], **change}
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n").writerow(row)
    return len(path.read_text().splitlines())


@pytest.mark.parametrize(
    "file, kind",
    [
        ("validation-annotations-bbox.csv", "dotdot"),
        ("validation-annotations-bbox.csv", "absolute"),
        ("validation-annotations-human-imagelabels-boxable.csv", "dotdot"),
        ("validation-annotations-human-imagelabels-boxable.csv", "absolute"),
    ],
)
@pytest.mark.parametrize("skip_corrupt", [False, True])
def test_openimages_image_id_outside_split_folder_is_refused(openimages, tmp_path, outside, file, kind, skip_corrupt):
    root = copy_of(openimages, tmp_path)
    folder = root / "validation"
    name = escape_name(kind, folder, outside.with_suffix(""))  # the reader adds ".jpg"
    line = append_row(root / file, {"ImageID": name})
    dm = OpenImagesDetectionDataModule(str(root), num_classes=9, skip_corrupt=skip_corrupt)
    with pytest.raises(DataFormatError) as err:  # skip_corrupt skips bad rows, never a name that escapes
        dm.setup()
    assert str(err.value) == f"{root / file}:{line}: {expected_problem(kind, name, folder)}"


def test_openimages_image_id_of_another_form_is_refused(openimages, tmp_path):
    root = copy_of(openimages, tmp_path)
    file = root / "validation-annotations-bbox.csv"
    line = append_row(file, {"ImageID": "photo"})  # a name inside the folder, but no Open Images id
    (root / "validation" / "photo.jpg").write_bytes((next((root / "validation").glob("*.jpg"))).read_bytes())
    with pytest.raises(DataFormatError) as err:
        OpenImagesDetectionDataModule(str(root), num_classes=9).setup()
    assert str(err.value) == (
        f"{file}:{line}: ImageID 'photo' is not an Open Images image id (16 hexadecimal digits); refused"
    )


def test_openimages_segmentation_image_id_outside_split_folder_is_refused(openimages, tmp_path, outside):
    root = copy_of(openimages, tmp_path)
    file = root / "validation-annotations-object-segmentation.csv"
    name = escape_name("dotdot", root / "validation", outside.with_suffix(""))
    line = append_row(file, {"ImageID": name})  # its MaskPath is a real mask: only the ImageID escapes
    with pytest.raises(DataFormatError) as err:
        OpenImagesSegmentationDataModule(str(root), num_classes=9).setup()
    assert str(err.value) == f"{file}:{line}: {expected_problem('dotdot', name, root / 'validation')}"


# --- iWildCam 2019 and iFood 2019: CSV rows ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
@pytest.mark.parametrize("split, folder", [("train", "train_images"), ("test", "test_images")])
def test_iwildcam_file_name_outside_its_folder_is_refused(generated, tmp_path, outside, kind, split, folder):
    small = dict(train_sequences=12, test_sequences=6, locations=3, image_size=16)
    root = generated_copy(generated, tmp_path, "iwildcam", gen.write_iwildcam2019, **small)
    path = root / f"{split}.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    name = escape_name(kind, root / folder, outside)
    rows[2]["file_name"] = name
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataFormatError) as err:
        IWildCam2019DataModule(str(root), **LOADER).setup("fit")
    assert str(err.value) == f"{path}:4: {expected_problem(kind, name, root / folder)}"


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_ifood_row_outside_its_folder_is_refused(generated, tmp_path, outside, kind, split):
    root = generated_copy(generated, tmp_path, "ifood", gen.write_ifood2019, **FGVC_SMALL)
    path = root / f"{split}_info.csv"
    lines = path.read_text().splitlines()
    name = escape_name(kind, root / f"{split}_set", outside)
    first = 1 if lines[0].split(",")[0] in ("image_name", "img_name") else 0  # an optional header row
    fields = lines[first].split(",")
    lines[first] = ",".join([name, *fields[1:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        IFood2019DataModule(str(root), 8, **LOADER).setup("fit")
    assert str(err.value) == f"{path}:{first + 1}: {expected_problem(kind, name, root / f'{split}_set')}"


# --- face mesh: annotations.json "file" ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_facemesh_file_outside_split_folder_is_refused(generated, tmp_path, outside, kind):
    small = dict(rendered=(2, 1, 1), annotated=(2, 1, 1), unlabeled=0, clip_frames=2)
    root = generated_copy(generated, tmp_path, "facemesh", write_facemesh, seed=3, image_size=64, clip_size=32, **small)
    folder = root / "annotated" / "val"
    path = folder / "annotations.json"
    name = escape_name(kind, folder, outside)
    line = put_name(path, 0, "file", name)
    with pytest.raises(DataFormatError) as err:
        FaceMeshDataModule(str(root)).setup("fit")
    assert str(err.value) == f"{path}:{line}: {expected_problem(kind, name, folder)}"


def test_names_inside_their_folder_still_read(generated, openimages):
    """The confinement refuses nothing the generators write (the published layouts)."""
    dm = OpenImagesDetectionDataModule(str(openimages), num_classes=9)
    dm.setup()
    item = dm._datasets["val"][0]
    assert item["image_name"] == "01" + "0000" + f"{0:010x}"
    inat = generated / "inat"
    if not inat.exists():
        gen.write_inaturalist2019(inat, **FGVC_SMALL)
    fm = INaturalist2019DataModule(str(inat), 8, **LOADER)
    fm.setup("fit")
    assert all(Path(p).is_file() for p in fm.datasets["val"].images)
