"""``python -m datamodules.check``: a user's download read by the real readers, every referenced file
found and decoded, counts against the published ones, known defects, one verdict line and a JSON
report. THUMOS'14 through its hook (real annotation rows and video lengths, see test_thumos14.py),
every other DataModule through the generic per-sample check."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datamodules.check import main
from datamodules.synthetic.thumos14 import write_corrupt_video
from datamodules.thumos14 import SPLITS
from datamodules.thumos14_annotations import THUMOS14_CLASSES, annotation_database
from tests.datamodules.test_thumos14 import REAL_DROPPED, write_real_layout

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real_layout(tmp_path_factory) -> Path:
    return write_real_layout(tmp_path_factory.mktemp("check_real") / "thumos14")


def run_check(args: list[str], report: Path, capsys) -> tuple[int, str, dict]:
    """Exit code, the verdict (the last line printed) and the JSON report of one check."""
    code = main([*args, "--report", str(report), "--workers", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, lines[-1], json.loads(report.read_text())


def test_thumos14_raw_missing_and_corrupt_videos_are_named_and_real_defects_listed(real_layout, tmp_path, capsys):
    root = tmp_path / "thumos14"
    shutil.copytree(real_layout, root)
    missing = root / "videos/validation/video_validation_0000856.mp4"
    missing.unlink()
    corrupt = root / "videos/test/video_test_0001081.mp4"
    write_corrupt_video(corrupt, real_layout / "videos/test/video_test_0001081.mp4")
    code, verdict, report = run_check(["data=thumos14", f"data.root={root}"], tmp_path / "r.json", capsys)
    assert code == 1
    assert verdict.startswith("FAILED: thumos14: 5 checked, 1 missing, 1 undecodable: ")
    assert str(missing) in verdict and str(corrupt) in verdict
    soccer = root / SPLITS["validation"][1] / "SoccerPenalty_val.txt"
    assert report["missing"] == [f"{missing}: missing (referenced by {soccer}:1)"]
    assert report["undecodable"][0].startswith(f"{corrupt}: cannot decode (cannot open video")
    assert report["counts"]["Validation videos"] == {"found": 2, "published": 200, "as_published": False}
    assert report["counts"]["Test videos"] == {"found": 3, "published": 213, "as_published": False}
    # the videos that decode give their durations, hence the real defects of the official annotations
    expected = sum(n for v, n in REAL_DROPPED.items() if v not in (missing.stem, corrupt.stem))
    assert len(report["known_defects"]) == expected == 27
    assert all(d.endswith("[a published defect of the official annotations]") for d in report["known_defects"])
    high_jump = root / SPLITS["validation"][1] / "HighJump_val.txt"
    assert (
        f"{high_jump}:5: video_validation_0000364 segment [113.6, 117.3] lies at or after the video's end "
        "(112.53 s); dropped [a published defect of the official annotations]"
    ) in report["known_defects"]


def test_thumos14_raw_check_resumes_from_its_journal(real_layout, tmp_path, capsys):
    args = ["data=thumos14", f"data.root={real_layout}"]
    code, verdict, first = run_check(args, tmp_path / "r.json", capsys)
    assert code == 1 and verdict.startswith("INCOMPLETE: thumos14: 5 files whole, but counts differ")
    assert first["resumed_from_journal"] == 0 and len(first["known_defects"]) == 30
    code, _, again = run_check(args, tmp_path / "r.json", capsys)
    assert again["resumed_from_journal"] == 5 and again["known_defects"] == first["known_defects"]
    # a file that changed since is checked again; --fresh starts over
    video = real_layout / "videos/test/video_test_0000270.mp4"
    video.touch()
    assert run_check(args, tmp_path / "r.json", capsys)[2]["resumed_from_journal"] == 4
    assert run_check([*args, "--fresh"], tmp_path / "r.json", capsys)[2]["resumed_from_journal"] == 0


def _features(tmp_path: Path, duration: float = 9.3) -> Path:
    videos = {}
    for name, subset in (("video_validation_0000051", "Validation"), ("video_test_0000004", "Test")):
        videos[name] = {
            "subset": subset,
            "duration": duration,
            "fps": 30.0,
            "segments": np.array([[1.0, 500.0]]),  # the segment past a 9.3 s video
            "labels": np.array([7]),
            "ambiguous": np.zeros((0, 2)),
        }
    path = tmp_path / "thumos14.json"
    path.write_text(json.dumps(annotation_database(videos, THUMOS14_CLASSES, "v"), indent=1))
    return path


def test_thumos14_features_wrong_shape_missing_array_and_clipped_segment(tmp_path, capsys):
    db = _features(tmp_path)
    np.save(tmp_path / "video_validation_0000051.npy", np.zeros((30, 7), np.float32))
    args = [
        "data=thumos14_features",
        f"data.features_dir={tmp_path}",
        f"data.annotation_file={db}",
        "data.feature_dim=4",
    ]
    code, verdict, report = run_check(args, tmp_path / "r.json", capsys)
    assert code == 1 and verdict.startswith("FAILED: thumos14_features: 2 checked, 1 missing, 1 other problems")
    assert f"{tmp_path / 'video_test_0000004.npy'}: missing (referenced by {db}:" in report["missing"][0]
    assert report["problems"][0].startswith(
        f"{tmp_path / 'video_validation_0000051.npy'}: shape [30, 7], expected (T, 8) = 2 streams x 4"
    )
    assert report["known_defects"][0] == (
        f"{db}:4: database.video_test_0000004.annotations[0]: video_test_0000004 segment [1, 500] "
        f"ends 490.70 s after the video's end (9.30 s); clipped to [1, 9.30] [not a published defect: is {db} cut "
        "short?]"
    )


def test_bad_annotation_value_is_the_verdict_naming_file_line_and_key(tmp_path, capsys):
    db = _features(tmp_path)
    db.write_text(db.read_text().replace('"duration": 9.3', '"duration": NaN', 1))
    args = ["data=thumos14_features", f"data.features_dir={tmp_path}", f"data.annotation_file={db}"]
    code, verdict, report = run_check(args, tmp_path / "r.json", capsys)
    assert code == 1
    assert verdict == (
        f"FAILED: thumos14_features: {db}:4: database.video_test_0000004.duration is nan; "
        "expected a finite positive number"
    )
    assert report["verdict"] == verdict


def test_generic_check_of_image_folders_names_a_truncated_image(tmp_path, capsys):
    from datamodules.synthetic.image_folder import write_image_folder

    root = write_image_folder(tmp_path / "shapes", num_classes=3, train_per_class=2, val_per_class=1, test_per_class=1)
    args = ["data=shapes", f"data.root={root}", "data.num_classes=3", "data.image_size=32"]
    code, verdict, report = run_check(args, tmp_path / "ok.json", capsys)
    assert (code, verdict) == (0, "OK: shapes: 12 samples whole")
    assert report["checked"] == "samples" and report["total"] == 12
    bad = sorted((root / "val").glob("*/*.JPEG"))[0]
    bad.write_bytes(bad.read_bytes()[:300])
    code, verdict, report = run_check(args, tmp_path / "bad.json", capsys)
    assert code == 1 and verdict.startswith(f"FAILED: shapes: 12 checked, 1 undecodable: {bad}: cannot decode image")


def test_generic_check_names_an_image_its_csv_lists_but_the_download_lacks(cfg_train, small_data, tmp_path, capsys):
    from hydra.utils import instantiate

    overrides = small_data("gldv2")
    cfg = cfg_train(overrides)
    instantiate(cfg.data).prepare_data()  # the generated copy, shared with the GLDv2 tests
    root = tmp_path / "gldv2"
    shutil.copytree(cfg.data.root, root)
    victim = sorted((root / "train").rglob("*.jpg"))[0]
    victim.unlink()
    args = [*[o for o in overrides if not o.startswith("data.root=")], f"data.root={root}"]
    code, verdict, report = run_check(args, tmp_path / "r.json", capsys)
    assert code == 1 and "1 missing" in verdict and str(victim) in verdict
    assert report["missing"] == [f"{victim}: image listed in the split's CSV does not exist"]


def test_missing_root_is_one_failed_line(tmp_path, capsys):
    code, verdict, _ = run_check(["data=shapes", f"data.root={tmp_path / 'nowhere'}"], tmp_path / "r.json", capsys)
    assert code == 1 and verdict.startswith(f"FAILED: shapes: {tmp_path / 'nowhere'}: data set not found")


def test_md5_of_a_referenced_file_is_checked_against_the_published_sum(tmp_path):
    """RFC 1321's test vector: md5("abc") = 900150983cd24fb0d6963f7d28e17f72."""
    from datamodules.check import DownloadInventory, ReferencedFile, check_download

    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    good.write_bytes(b"abc")
    bad.write_bytes(b"abd")
    published = "900150983cd24fb0d6963f7d28e17f72"
    inventory = DownloadInventory(
        files=[ReferencedFile(good, "README", published), ReferencedFile(bad, "README", published)]
    )

    class Download:  # a DataModule whose hook lists two archives
        def download_inventory(self):
            return inventory

    report = check_download(Download(), "archives", tmp_path / "r.json")
    assert report["wrong_md5"] == [f"{bad}: md5 {hashlib.md5(b'abd').hexdigest()}, published {published}"]
    assert report["verdict"].startswith(f"FAILED: archives: 2 checked, 1 with a wrong md5: {bad}: md5 ")
    assert json.loads((tmp_path / "r.json").read_text()) == report


def test_herbarium2019_published_counts_and_archive_md5(tmp_path, capsys):
    from datamodules.synthetic.fgvc import write_herbarium2019

    root = write_herbarium2019(tmp_path / "herbarium2019", num_classes=3, max_per_class=4, test_total=6, image_size=32)
    (tmp_path / "validation.tar.gz").write_bytes(b"not the published archive")  # beside the data folder
    args = ["data=herbarium2019", f"data.root={root}", "data.num_classes=3", "data.image_size=32"]
    code, verdict, report = run_check(args, tmp_path / "r.json", capsys)
    assert code == 1 and "1 with a wrong md5" in verdict
    assert report["wrong_md5"][0].startswith(f"{tmp_path / 'validation.tar.gz'}: md5 ")
    assert report["wrong_md5"][0].endswith("published 2f854d580949e54f114993a74adc3d4b")
    found = len(list((root / "train").glob("*/*.jpg")))
    assert report["counts"]["train images"] == {"found": found, "published": 34225, "as_published": False}
    assert report["counts"]["test images"]["found"] == 6
    (tmp_path / "validation.tar.gz").unlink()
    code, verdict, _ = run_check(args, tmp_path / "r2.json", capsys)
    assert code == 1 and verdict.startswith("INCOMPLETE: herbarium2019: ")
    assert f"train images {found} (published 34225)" in verdict


def test_a_data_config_key_without_default_is_named(tmp_path, capsys):
    code = main(["data=fgvc_imagefolder", f"data.root={tmp_path}", "--report", str(tmp_path / "r.json")])
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 1
    assert verdict == "FAILED: the data config has no value for data.num_classes: pass data.num_classes=<value>"
