"""Every FGVC6 reader on its published layout (written by the generators), its long tail and shifted
test prior, and its errors for malformed rows and unknown ids (file and line named)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.data import DataFormatError
from datamodules.fgvc.class_folders import ClassFolderDataModule
from datamodules.herbarium2019 import Herbarium2019DataModule
from datamodules.icassava2019 import ICassava2019DataModule
from datamodules.ifood2019 import IFood2019DataModule
from datamodules.imaterialist_product2019 import IMaterialistProduct2019DataModule
from datamodules.imet2019 import IMet2019DataModule
from datamodules.inaturalist2019 import INaturalist2019DataModule
from datamodules.iwildcam2019 import IWildCam2019DataModule
from datamodules.synthetic import fgvc as gen

SMALL = dict(num_classes=8, max_per_class=12, imbalance=6.0, test_total=24, image_size=32)
LOADER = dict(image_size=32, batch_size=4, num_workers=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fgvc_layouts")


def layout(root: Path, name: str, writer, **kw) -> Path:
    path = root / name
    if not path.exists():
        writer(path, **kw)
    return path


def test_inaturalist2019_reads_coco_json_with_taxonomy(root):
    path = layout(root, "inat", gen.write_inaturalist2019, **SMALL)
    record = json.loads((path / "train2019.json").read_text())
    assert set(record) >= {"images", "annotations", "categories"}
    assert set(record["categories"][0]) >= {"id", "name", "kingdom", "phylum", "class", "order", "family", "genus"}
    assert record["images"][0]["file_name"].startswith("train_val2019/")
    dm = INaturalist2019DataModule(
        str(path), 8, taxonomy_levels=["genus", "family"], taxonomy_sizes={"genus": 2, "family": 1}, **LOADER
    )
    dm.setup("fit")
    annotations = {a["image_id"]: a["category_id"] for a in record["annotations"]}
    assert dm.datasets["train"].labels == [annotations[int(i)] for i in dm.ids["train"]]
    assert dm.taxonomy["genus"] == [0, 0, 0, 0, 1, 1, 1, 1] and dm.taxonomy["family"] == [0] * 8
    image, label, index = dm.test_dataloader().dataset[0]
    assert tuple(image.shape) == (3, 32, 32) and index == 0
    # the test labels come from solution.csv, in the order of test2019.json
    solution = dict(line.split(",") for line in (path / "solution.csv").read_text().splitlines()[1:])
    assert dm.datasets["test"].labels == [int(solution[i]) for i in dm.ids["test"]]


def test_generated_prior_is_long_tailed_and_shifted_on_test(root):
    path = layout(root, "inat", gen.write_inaturalist2019, **SMALL)
    dm = INaturalist2019DataModule(str(path), 8, **LOADER)
    dm.setup("fit")
    train = dm.train_class_counts
    test = np.bincount(dm.datasets["test"].labels, minlength=8)
    assert train.max() == 12 and train.min() == 2  # 12 / 6
    # reversed tail: the most frequent training class is the rarest on test, and the reverse
    assert test[train.argmax()] == test.min() and test[train.argmin()] == test.max()
    assert dm.train_prior == pytest.approx(train / train.sum())
    # the prior the network trains under follows the sampler: sqrt(n_c), or uniform when balanced
    for sampler, drawn in (("sqrt", np.sqrt(train)), ("class_balanced", np.ones(8))):
        other = INaturalist2019DataModule(str(path), 8, sampler=sampler, **LOADER)
        other.setup("fit")
        assert other.train_prior == pytest.approx(drawn / drawn.sum())


def test_inaturalist2019_errors_name_the_file(root, tmp_path):
    path = layout(root, "inat", gen.write_inaturalist2019, **SMALL)
    bad = tmp_path / "inat_bad"
    bad.mkdir()
    for name in ("val2019.json", "test2019.json"):
        (bad / name).write_text((path / name).read_text())
    record = json.loads((path / "train2019.json").read_text())
    record["annotations"][3]["category_id"] = 999
    (bad / "train2019.json").write_text(json.dumps(record))
    dm = INaturalist2019DataModule(str(bad), 8, **LOADER)
    with pytest.raises(DataFormatError, match=r"train2019.json: annotations\[3\]: unknown category_id 999"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="data.taxonomy_sizes.genus=5"):
        INaturalist2019DataModule(str(path), 8, taxonomy_sizes={"genus": 5}, **LOADER).setup("fit")


def test_herbarium2019_class_folders(root, tmp_path):
    path = layout(root, "herb", gen.write_herbarium2019, **SMALL)
    assert (path / "validation").is_dir() and any((path / "test").glob("*.jpg"))
    dm = Herbarium2019DataModule(str(path), 8, **LOADER)
    dm.setup("fit")
    assert dm.label_ids == [str(c) for c in range(8)]
    first = dm.datasets["train"].images[0]
    assert dm.datasets["train"].labels[0] == int(Path(first).parent.name)
    # the submission id is the whole test file name (README_2019.md: "use the entire filename, e.g. 00123.jpg")
    assert dm.ids["test"][0] == Path(dm.datasets["test"].images[0]).name
    (path / "validation" / "99").mkdir()
    try:
        with pytest.raises(DataFormatError, match="class folder '99' is not among the 8 classes"):
            Herbarium2019DataModule(str(path), 8, **LOADER).setup("fit")
    finally:
        (path / "validation" / "99").rmdir()


def test_icassava2019_holds_out_validation_and_reads_test_0(root):
    path = layout(
        root, "cassava", gen.write_icassava2019, num_classes=5, max_per_class=20, test_total=15, image_size=32
    )
    dm = ICassava2019DataModule(str(path), 5, val_fraction=0.25, **LOADER)
    dm.setup("fit")
    assert dm.class_names == ["cbb", "cbsd", "cgm", "cmd", "healthy"]
    n = len(dm.datasets["train"]) + len(dm.datasets["val"])
    assert len(dm.datasets["val"]) == round(n * 0.25)
    assert set(dm.ids["train"]).isdisjoint(dm.ids["val"])
    assert dm.ids["test"][0].startswith("test-img-") and dm.ids["test"][0].endswith(".jpg")


def test_any_imagefolder_set(root):
    path = layout(
        root, "cassava", gen.write_icassava2019, num_classes=5, max_per_class=20, test_total=15, image_size=32
    )
    dm = ClassFolderDataModule(str(path), 5, val_dir=None, test_dir=None, solution_file=None, **LOADER)
    dm.setup("fit")
    assert len(dm.datasets["test"]) == len(dm.datasets["val"])  # no test folder: validation is tested


def test_ifood2019_info_csv(root, tmp_path):
    path = layout(root, "ifood", gen.write_ifood2019, **SMALL)
    first = (path / "train_info.csv").read_text().splitlines()[0].split(",")
    dm = IFood2019DataModule(str(path), 8, **LOADER)
    dm.setup("fit")
    assert Path(dm.datasets["train"].images[0]).name == first[0] and dm.datasets["train"].labels[0] == int(first[1])
    bad = tmp_path / "ifood_bad"
    bad.mkdir()
    (bad / "class_list.txt").write_text((path / "class_list.txt").read_text())
    (bad / "train_info.csv").write_text("a.jpg,1\nb.jpg,x\n")
    with pytest.raises(DataFormatError, match=r"train_info.csv:2: label must be an integer, found 'x'"):
        IFood2019DataModule(str(bad), 8, **LOADER).setup("fit")
    (bad / "train_info.csv").write_text("a.jpg,1\nb.jpg,8\n")
    with pytest.raises(DataFormatError, match=r"train_info.csv:2: unknown label 8"):
        IFood2019DataModule(str(bad), 8, **LOADER).setup("fit")


def test_imaterialist_product2019_json(root, tmp_path):
    path = layout(root, "imat", gen.write_imaterialist_product2019, **SMALL)
    entries = json.loads((path / "train.json").read_text())["images"]
    assert set(entries[0]) == {"id", "url", "class"}
    dm = IMaterialistProduct2019DataModule(str(path), 8, **LOADER)
    dm.setup("fit")
    assert dm.datasets["train"].labels == [e["class"] for e in entries]
    entries[2]["class"] = 12
    bad = tmp_path / "imat_bad"
    bad.mkdir()
    (bad / "train.json").write_text(json.dumps({"images": entries}))
    with pytest.raises(DataFormatError, match=r"train.json: images\[2\]: unknown class 12"):
        IMaterialistProduct2019DataModule(str(bad), 8, **LOADER).setup("fit")


def test_imet2019_multilabel_csv(root, tmp_path):
    path = layout(root, "imet", gen.write_imet2019, train_total=40, test_total=12, image_size=32)
    labels = (path / "labels.csv").read_text().splitlines()
    assert labels[0] == "attribute_id,attribute_name" and labels[1].startswith("0,culture::")
    dm = IMet2019DataModule(str(path), 9, val_fraction=0.25, **LOADER)
    dm.setup("fit")
    rows = dict(line.split(",") for line in (path / "train.csv").read_text().splitlines()[1:])
    i = dm.ids["train"][0]
    _, target = dm.datasets["train"][0]
    assert np.flatnonzero(target.numpy()).tolist() == sorted(int(v) for v in rows[i].split())
    _, test_target = dm.datasets["test"][0]
    assert test_target.sum() >= 1  # from solution.csv
    bad = tmp_path / "imet_bad"
    bad.mkdir()
    (bad / "labels.csv").write_text((path / "labels.csv").read_text())
    (bad / "train.csv").write_text("id,attribute_ids\nabc,0 3\ndef,1 42\n")
    with pytest.raises(DataFormatError, match=r"train.csv:3: unknown attribute_id 42"):
        IMet2019DataModule(str(bad), 9, val_fraction=0.0, **LOADER).setup("fit")
    (bad / "labels.csv").write_text("attribute_id,attribute_name\n0,culture::x\n1,medium::y\n")
    with pytest.raises(DataFormatError, match=r"labels.csv:3: attribute_name 'medium::y'"):
        IMet2019DataModule(str(bad), 2, **LOADER).setup("fit")


def test_iwildcam2019_sequences_and_unseen_locations(root, tmp_path):
    path = layout(root, "iwildcam", gen.write_iwildcam2019, train_sequences=20, test_sequences=6, image_size=32)
    header = (path / "train.csv").read_text().splitlines()[0].split(",")
    assert header == gen.IWILDCAM_COLUMNS and "category_id" not in (path / "test.csv").read_text().splitlines()[0]
    dm = IWildCam2019DataModule(str(path), 23, val_fraction=0.3, **LOADER)
    dm.setup("fit")
    import csv

    rows = {r["id"]: r for r in csv.DictReader(open(path / "train.csv"))}
    train_locations = {rows[i]["location"] for i in dm.ids["train"]}
    val_locations = {rows[i]["location"] for i in dm.ids["val"]}
    assert train_locations and val_locations and train_locations.isdisjoint(val_locations)
    test_rows = list(csv.DictReader(open(path / "test.csv")))
    assert dm.test_groups == [r["seq_id"] for r in test_rows]
    bad = tmp_path / "iwildcam_bad"
    bad.mkdir()
    lines = (path / "train.csv").read_text().splitlines()
    broken = lines[2].split(",")
    broken[0] = "31"
    (bad / "train.csv").write_text("\n".join([lines[0], lines[1], ",".join(broken)]) + "\n")
    with pytest.raises(DataFormatError, match=r"train.csv:3: unknown category_id 31"):
        IWildCam2019DataModule(str(bad), 23, **LOADER).setup("fit")
    (bad / "train.csv").write_text("\n".join([lines[0], lines[1], ",".join(broken[:5])]) + "\n")
    with pytest.raises(DataFormatError, match=r"train.csv:3: expected 11 fields"):
        IWildCam2019DataModule(str(bad), 23, **LOADER).setup("fit")


def test_solution_with_an_unknown_label_is_rejected(root, tmp_path):
    import shutil

    path = layout(root, "herb", gen.write_herbarium2019, **SMALL)
    bad = tmp_path / "herb_bad"
    shutil.copytree(path, bad)
    lines = (bad / "solution.csv").read_text().splitlines()
    lines[4] = lines[4].split(",")[0] + ",77"
    (bad / "solution.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"solution.csv:5: unknown label '77'"):
        Herbarium2019DataModule(str(bad), 8, **LOADER).setup("fit")


def test_class_subset_restricts_training_classes(root, tmp_path):
    path = layout(root, "herb", gen.write_herbarium2019, **SMALL)
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps({"chosen_classes": [1, 5]}))
    dm = Herbarium2019DataModule(str(path), 8, class_subset=str(subset), **LOADER)
    dm.setup("fit")
    assert set(dm.datasets["train"].labels) == {1, 5} and set(dm.datasets["val"].labels) <= {1, 5}


def test_imaterialist_product2019_ids_are_file_names(tmp_path):
    # msight-tech/imaterialist-product-2019 README.md: "The filename of each image is its id"; its sample
    # submission writes ids such as 20dc3e9e6ca73cfa3ad4d13d1d7526b8.jpg. Copies without the extension read too.
    (tmp_path / "test.json").write_text(
        json.dumps(
            {"images": [{"id": "20dc3e9e6ca73cfa3ad4d13d1d7526b8.jpg", "url": "u"}, {"id": "c0ff6e3", "url": "v"}]}
        )
    )
    paths, ids = IMaterialistProduct2019DataModule(str(tmp_path), 4).read_test()
    assert ids == ["20dc3e9e6ca73cfa3ad4d13d1d7526b8.jpg", "c0ff6e3"]
    assert paths == [tmp_path / "test" / "20dc3e9e6ca73cfa3ad4d13d1d7526b8.jpg", tmp_path / "test" / "c0ff6e3.jpg"]
