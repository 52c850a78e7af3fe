"""predict.py must not lose or mix work (issue 28): the journal is tied to its checkpoint and to its
inputs' size and mtime; a training run folder is refused; two inputs never share an output name; a
torn last journal line costs one re-prediction, not a lost record; non-finite outputs and
decompression bombs are skipped, counted and named; a checkpoint's ``${...}`` strings stay data;
kill-and-resume leaves every input predicted exactly once. Real checkpoints, real files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from core.prediction import JOURNAL_DIR, predict, read_journals
from core.resolvers import PROJECT_ROOT
from core.training import train
from datamodules.predict_inputs import output_names
from tests.conftest import SMALL_DATA, compose_config

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSIFICATION = [*SMALL_DATA["shapes"], "logger=csv", "trainer.max_epochs=1", "test=false"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, data_dir) -> tuple[Path, Path, Path]:
    """(last checkpoint, its training run folder, the data root) of a one-epoch shapes run."""
    run = tmp_path_factory.mktemp("train") / "run"
    cfg = compose_config("train", CLASSIFICATION, run, data_dir)
    train(cfg)
    return run / "checkpoints" / "last.ckpt", run, Path(cfg.data.root)


def photos(root: Path, folder: Path, count: int) -> Path:
    """``count`` real test images of the generated data set, flat in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted((root / "test").glob("*/*.JPEG"))[:count]:
        shutil.copy(f, folder / f.name)
    return folder


def run_predict(out: Path, ckpt: Path, images: Path, data_dir: Path, *extra: str) -> dict:
    overrides = ["task=classification", f"ckpt_path={ckpt}", f"input={images}", "product.inputs.num_workers=0"]
    return predict(compose_config("predict", [*overrides, *extra], out, data_dir))


def journal_lines(out: Path) -> list[str]:
    return (out / JOURNAL_DIR / "journal_rank0.jsonl").read_text().splitlines()


def derived_checkpoint(ckpt: Path, target: Path, change) -> Path:
    """A real checkpoint file made from ``ckpt`` with ``change(checkpoint dict)`` applied."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, target)
    return target


def head_weight(checkpoint: dict) -> str:
    return next(k for k in checkpoint["state_dict"] if k.endswith("classifier.weight"))


def test_another_checkpoint_or_a_changed_input_is_refused_and_fresh_starts_again(classifier, data_dir, tmp_path):
    ckpt, _, root = classifier
    images = photos(root, tmp_path / "photos", 4)
    out = tmp_path / "pred"
    assert run_predict(out, ckpt, images, data_dir)["predicted"] == 4
    record = json.loads((out / JOURNAL_DIR / "run.json").read_text())["checkpoint"]
    assert record["path"] == str(ckpt.resolve()) and record["size"] == ckpt.stat().st_size

    def perturb(checkpoint):
        checkpoint["state_dict"][head_weight(checkpoint)] += 0.5

    other = derived_checkpoint(ckpt, tmp_path / "other.ckpt", perturb)
    with pytest.raises(ValueError) as err:
        run_predict(out, other, images, data_dir)
    message = str(err.value)
    assert f"holds predictions of checkpoint {ckpt.resolve()}" in message
    assert f"not of ckpt_path={other.resolve()}" in message and "fresh=true" in message
    assert len(journal_lines(out)) == 4  # nothing was appended

    changed = sorted(images.iterdir())[1]
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, another file
    with pytest.raises(ValueError, match=rf"{changed}: changed since it was predicted into {out} .*fresh=true"):
        run_predict(out, ckpt, images, data_dir)

    summary = run_predict(out, other, images, data_dir, "fresh=true")
    assert summary["predicted"] == 4 and summary["already_done_before_this_run"] == 0
    assert len(journal_lines(out)) == 4  # the earlier journal is gone, not appended to
    assert json.loads((out / JOURNAL_DIR / "run.json").read_text())["checkpoint"]["path"] == str(other.resolve())
    assert "ckpt_path: " + str(other) in (out / "config_resolved.yaml").read_text()


def test_a_training_run_folder_is_refused(classifier, data_dir, tmp_path):
    ckpt, run, root = classifier
    images = photos(root, tmp_path / "photos", 2)
    before = {p: p.read_bytes() for p in (run / "config_resolved.yaml", run / "metrics.json")}
    with pytest.raises(ValueError, match=rf"output_dir={run} holds a training or evaluation run \(checkpoints/\)"):
        run_predict(run, ckpt, images, data_dir)
    assert {p: p.read_bytes() for p in before} == before
    assert not (run / JOURNAL_DIR).exists()
    # An evaluation folder (metrics.json, no checkpoints) and one whose run has not saved yet.
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    shutil.copy(run / "metrics.json", evaluation)
    with pytest.raises(ValueError, match=r"holds a training or evaluation run \(metrics.json\)"):
        run_predict(evaluation, ckpt, images, data_dir)
    starting = tmp_path / "starting"
    (starting / ".hydra").mkdir(parents=True)
    (starting / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: train\n")
    with pytest.raises(ValueError, match=r"\(\.hydra/ of a train job\)"):
        run_predict(starting, ckpt, images, data_dir)


def test_inputs_that_share_a_name_get_their_own_and_resume_keeps_names(classifier, data_dir, tmp_path):
    ckpt, _, root = classifier
    source = sorted((root / "test").glob("*/*.JPEG"))
    images = tmp_path / "photos"
    (images / "a").mkdir(parents=True)
    shutil.copy(source[0], images / "x.jpg")
    out = tmp_path / "pred"
    run_predict(out, ckpt, images / "x.jpg", data_dir)
    from PIL import Image

    Image.open(source[1]).save(images / "x.png")
    shutil.copy(source[2], images / "a" / "x.jpg")
    shutil.copy(source[3], images / "a__x.jpg")
    summary = run_predict(out, ckpt, images, data_dir)
    assert summary["predicted"] == 4 and summary["already_done_before_this_run"] == 1
    done, _ = read_journals(out)
    names = {Path(k).relative_to(images).as_posix(): v["name"] for k, v in done.items()}
    assert names["x.jpg"] == "x"  # named in the first run, kept
    assert names["x.png"] == "x.png"
    assert names["a/x.jpg"].startswith("a__x.jpg-") and names["a__x.jpg"].startswith("a__x.jpg-")
    assert len(set(names.values())) == 4
    # Deterministic and readable, worked by hand: only the colliding ones change.
    files = [images / "a" / "x.jpg", images / "a__x.jpg", images / "b.jpg", images / "x.jpg", images / "x.png"]
    got = output_names(files)
    assert got[2:] == ["b", "x.jpg", "x.png"] and got == output_names(files)
    assert got[0] != got[1] and all(len(n) == len("a__x.jpg-") + 8 for n in got[:2])
    assert output_names([images / "x.png"], reserved={"x"}) == ["x.png"]


def test_a_torn_last_journal_line_is_discarded_and_its_input_predicted_again(classifier, data_dir, tmp_path):
    ckpt, _, root = classifier
    images = photos(root, tmp_path / "photos", 5)
    out = tmp_path / "pred"
    run_predict(out, ckpt, images, data_dir)
    journal = out / JOURNAL_DIR / "journal_rank0.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    torn_input = json.loads(lines[-1])["input"]
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a kill mid-append
    for f in sorted((root / "test").glob("*/*.JPEG"))[5:8]:
        shutil.copy(f, images / f.name)
    summary = run_predict(out, ckpt, images, data_dir)
    assert summary["inputs"] == 8 and summary["predicted"] == 8 and summary["skipped"] == 0
    assert summary["already_done_before_this_run"] == 4
    records = [json.loads(line) for line in journal.read_text().splitlines()]  # every line whole
    assert len(records) == 8 and len({r["input"] for r in records}) == 8
    assert torn_input in {r["input"] for r in records[4:]}  # predicted again by the second run
    with open(out / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8


def test_non_finite_outputs_are_skipped_and_named(classifier, data_dir, tmp_path):
    ckpt, _, root = classifier
    images = photos(root, tmp_path / "photos", 2)

    def poison(checkpoint):
        checkpoint["state_dict"][head_weight(checkpoint)].fill_(float("nan"))

    broken = derived_checkpoint(ckpt, tmp_path / "nan.ckpt", poison)
    with pytest.warns(UserWarning, match="the model's output for it holds nan values"):
        with pytest.raises(FileNotFoundError) as err:
            run_predict(tmp_path / "pred", broken, images, data_dir)
    assert "none of the 2 input files could be read or predicted (2 skipped" in str(err.value)
    first = sorted(images.iterdir())[0]
    assert f"{first}: the model's output for it holds nan values; nothing written" in str(err.value)
    assert not (tmp_path / "pred" / "predictions.csv").exists()


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG whose header claims width x height (the pixels never follow)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)))
    return path


def test_a_decompression_bomb_is_skipped_counted_and_named(classifier, data_dir, tmp_path):
    ckpt, _, root = classifier
    images = photos(root, tmp_path / "photos", 3)
    bomb = bomb_png(images / "huge.png")
    with pytest.warns(UserWarning, match="huge.png"):
        summary = run_predict(tmp_path / "pred", ckpt, images, data_dir)
    assert summary["predicted"] == 3 and summary["skipped"] == 1
    assert "decompression-bomb limit" in summary["skipped_files"][str(bomb)]


def test_interpolations_stored_in_a_checkpoint_stay_data(classifier, data_dir, tmp_path, monkeypatch):
    ckpt, _, root = classifier
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t-value")

    def plant(checkpoint):
        checkpoint["hyper_parameters"]["optimizer"]["opt"] = "${oc.env:SECRET_TOKEN}"

    planted = derived_checkpoint(ckpt, tmp_path / "planted.ckpt", plant)
    out = tmp_path / "pred"
    run_predict(out, planted, photos(root, tmp_path / "photos", 2), data_dir)
    text = (out / "config_resolved.yaml").read_text()
    assert "s3cr3t-value" not in text
    assert r"opt: \${oc.env:SECRET_TOKEN}" in text
    assert OmegaConf.load(out / "config_resolved.yaml").task.optimizer.opt == "${oc.env:SECRET_TOKEN}"


@pytest.mark.slow
def test_kill_and_resume_predicts_every_input_once(classifier, data_dir, tmp_path):
    """predict.py killed (SIGKILL) mid-run, started again with the same output_dir: every input
    appears once in the journal and predictions.csv."""
    ckpt, _, root = classifier
    source = sorted((root / "test").glob("*/*.JPEG"))
    images = tmp_path / "photos"
    images.mkdir()
    for k in range(300):
        shutil.copy(source[k % len(source)], images / f"{k:03d}.jpg")
    out = tmp_path / "pred"
    args = [
        sys.executable,
        str(PROJECT_ROOT / "predict.py"),
        "task=classification",
        f"ckpt_path={ckpt}",
        f"input={images}",
        f"output_dir={out}",
        "product.inputs.batch_size=1",
        "product.inputs.num_workers=0",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={data_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / JOURNAL_DIR / "journal_rank0.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not journal.exists() or len(journal.read_bytes().splitlines()) < 20):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = len(journal.read_bytes().splitlines())
    assert 20 <= killed_at < 300
    subprocess.run(args, cwd=PROJECT_ROOT, env=env, check=True, capture_output=True, timeout=600)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["predicted"] == 300 and summary["skipped"] == 0
    assert summary["already_done_before_this_run"] >= killed_at - 1
    inputs = [json.loads(line)["input"] for line in journal.read_text().splitlines()]
    assert len(inputs) == len(set(inputs)) == 300
    with open(out / "predictions.csv", newline="") as f:
        rows = [r["input"] for r in csv.DictReader(f)]
    assert len(rows) == len(set(rows)) == 300
