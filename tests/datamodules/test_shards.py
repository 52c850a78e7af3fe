"""LitData shards of the image DataModules: ``python -m datamodules.pack`` and ``data.format=shards``.

The shards must give the same samples, labels and (eval) tensors as the folder reader; under DDP each
rank streams its own part of every epoch (2 real gloo processes here), the order changes with the
epoch and the seed, and a run killed mid-epoch resumes from the loader state in its checkpoint
without training a sample twice."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from litdata import StreamingDataset
from omegaconf import OmegaConf

from core.data import DataFormatError
from core.resolvers import PROJECT_ROOT
from core.shards import META_FILE
from datamodules.pack import main as pack_main
from tests.conftest import SMALL_DATA, compose_config

WORLD_SIZE = 2
SHAPES = [*SMALL_DATA["shapes"], "data.batch_size=8"]  # 10 classes x 12 / 4 / 4 images of 32 px
TRAIN, VAL, TEST = 120, 40, 40


def data_config(overrides: list[str], out: Path, data_dir: Path):
    """The resolved data config of ``overrides`` (train.py's composition), generator kept."""
    cfg = compose_config("train", overrides, out, data_dir)
    return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))


def datamodule(config, **changes):
    config = OmegaConf.merge(config, changes)
    dm = instantiate(config)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def shapes(tmp_path_factory, shared_data_dir) -> tuple[object, Path]:
    """(data config of the small shapes set, its shards written by the pack command)."""
    tmp = tmp_path_factory.mktemp("shards")
    config = data_config(SHAPES, tmp / "compose", shared_data_dir)
    datamodule(config)  # generated once
    out = tmp / "shapes_shards"
    assert pack_main([*SHAPES, f"data.root={config.root}", "--out", str(out), "--workers", "2"]) == 0
    return config, out


def test_pack_stores_each_file_bytes_and_target(shapes):
    config, out = shapes
    meta = json.loads((out / META_FILE).read_text())
    assert {s: meta["splits"][s]["packed"] for s in ("train", "val", "test")} == {
        "train": TRAIN,
        "val": VAL,
        "test": TEST,
    }
    folder = datamodule(config)
    assert meta["class_names"] == folder.class_names
    assert meta["splits"]["train"]["targets"] == folder.datasets["train"].labels
    raw = StreamingDataset(str(out / "val"))
    for k in (0, VAL - 1):
        sample = raw[k]
        path = Path(folder.datasets["val"].images[sample["index"]])
        assert bytes(sample["name"]).decode() == str(path)
        assert bytes(sample["image"]) == path.read_bytes()  # the encoded file, not decoded pixels
        assert sample["target"] == folder.datasets["val"].labels[sample["index"]]


def test_shards_give_the_folder_samples_and_eval_tensors(shapes):
    config, out = shapes
    folder = datamodule(config)
    packed = datamodule(config, format="shards", shards=str(out))
    assert packed.class_names == folder.class_names
    for split in ("val", "test"):
        seen = []
        for images, labels in packed._loader(split, shuffle=False):
            seen += list(zip(images, labels.tolist()))
        assert len(seen) == len(folder.datasets[split])
        # positions are split order: sample k of the stream is the folder's sample k
        for k, (image, label) in enumerate(seen):
            want_image, want_label = folder.datasets[split][k]
            assert label == want_label
            assert torch.equal(image, want_image), f"{split}[{k}] differs"
    labels = [y for _, batch in packed.train_dataloader() for y in batch.tolist()]
    assert sorted(labels) == sorted(folder.datasets["train"].labels)


def test_cifar_arrays_are_packed_as_png_and_read_back_exactly(tmp_path, shared_data_dir):
    overrides = [*SMALL_DATA["cifar100"]]
    config = data_config(overrides, tmp_path / "compose", shared_data_dir)
    folder = datamodule(config)
    out = tmp_path / "cifar_shards"
    assert pack_main([*overrides, f"data.root={config.root}", "--out", str(out), "--workers", "2"]) == 0
    packed = datamodule(config, format="shards", shards=str(out))
    for k in (0, 7, len(folder.datasets["test"]) - 1):
        image, label = packed.datasets["test"][k]
        want_image, want_label = folder.datasets["test"][k]
        assert label == want_label and torch.equal(image, want_image)


def test_fgvc_shards_keep_ids_label_ids_and_indexed_eval(shapes, tmp_path, shared_data_dir):
    config, _ = shapes
    overrides = [
        "data=fgvc_imagefolder",
        f"data.root={config.root}",
        "data.num_classes=10",
        "data.test_flat=false",
        "data.solution_file=null",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=8",
    ]
    fgvc = data_config(overrides, tmp_path / "compose", shared_data_dir)
    out = tmp_path / "fgvc_shards"
    assert pack_main([*overrides, "--out", str(out), "--workers", "2"]) == 0
    folder = datamodule(fgvc)
    packed = datamodule(fgvc, format="shards", shards=str(out))
    assert packed.ids == folder.ids and packed.label_ids == folder.label_ids
    assert packed.train_prior == pytest.approx(folder.train_prior)
    images, targets, index = next(iter(packed.val_dataloader()))
    for image, target, i in zip(images, targets.tolist(), index.tolist()):
        want_image, want_target, want_index = (*folder.datasets["val"][i], i)
        assert (target, i) == (want_target, want_index) and torch.equal(image, want_image)
    with pytest.raises(InstantiationException, match="data.sampler='sqrt' needs the folder reader"):
        instantiate(OmegaConf.merge(fgvc, {"format": "shards", "shards": str(out), "sampler": "sqrt"}))


def test_multi_label_imet_targets_survive_the_pack(tmp_path, shared_data_dir):
    overrides = ["data=imet2019", "data.generator.train_total=60", "data.generator.test_total=20", "data.num_workers=0"]
    config = data_config(overrides, tmp_path / "compose", shared_data_dir)
    folder = datamodule(config)
    out = tmp_path / "imet_shards"
    assert pack_main([*overrides, f"data.root={config.root}", "--out", str(out), "--workers", "2"]) == 0
    packed = datamodule(config, format="shards", shards=str(out))
    assert (packed.train_class_counts == folder.train_class_counts).all() and packed.ids == folder.ids
    for k in (0, len(folder.datasets["test"]) - 1):
        (image, target, index), (want_image, want_target) = packed.datasets["test"][k], folder.datasets["test"][k]
        assert index == k and target.dtype == torch.float32 and torch.equal(target, want_target)
        assert torch.equal(image, want_image)


def test_bad_requests_get_one_clear_error(shapes, tmp_path, capsys):
    config, out = shapes
    with pytest.raises(InstantiationException, match="data.format=shards needs data.shards="):
        instantiate(OmegaConf.merge(config, {"format": "shards"}))
    with pytest.raises(InstantiationException, match="data.format='tar'"):
        instantiate(OmegaConf.merge(config, {"format": "tar"}))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/meta.json: no packed data set here"):
        datamodule(config, format="shards", shards=str(tmp_path))
    with pytest.raises(ValueError, match="packed data set has 10 classes but the config says data.num_classes=7"):
        datamodule(config, format="shards", shards=str(out), num_classes=7)
    assert pack_main(["data=gldv2", f"data.root={tmp_path}/gldv2", "--out", str(tmp_path / "x")]) == 2
    assert "gldv2 (datamodules.gldv2.GLDv2DataModule) is not one of them" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="pack into a local or NFS folder, then copy it"):
        pack_main([*SHAPES, "--out", "s3://bucket/shapes"])


def test_corrupt_image_stops_the_pack_or_is_left_out(shapes, tmp_path, capsys):
    config, _ = shapes
    root = tmp_path / "shapes"
    shutil.copytree(config.root, root)
    bad = sorted((root / "val").rglob("*.*"))[0]
    bad.write_bytes(bad.read_bytes()[:40])  # a cut-off download
    args = [*SHAPES, f"data.root={root}", "--workers", "2"]
    assert pack_main([*args, "data.skip_corrupt=false", "--out", str(tmp_path / "strict")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"FAILED: shapes: {bad}: cannot decode image (")
    assert error.endswith("fix the files, or pass data.skip_corrupt=true to leave them out")
    assert not (tmp_path / "strict" / "val").exists()  # no half split left behind
    assert pack_main([*args, "data.skip_corrupt=true", "--out", str(tmp_path / "skip")]) == 0
    meta = json.loads((tmp_path / "skip" / META_FILE).read_text())
    assert (meta["splits"]["val"]["packed"], meta["splits"]["val"]["left_out"]) == (VAL - 1, 1)


def test_decode_error_names_the_packed_sample():
    from io import BytesIO

    from core.images import decode_image

    with pytest.raises(DataFormatError, match=r"^a/b.jpg \(packed in s3://x/train\): cannot decode image"):
        decode_image(BytesIO(b"not a jpeg"), name="a/b.jpg (packed in s3://x/train)")


def test_each_loader_worker_reads_each_sample_once_per_epoch(tmp_path, monkeypatch):
    """A worker whose share of a chunk starts mid-chunk (LitData's balancing: here the second of 2
    workers starts at sample 352 of a 700-sample chunk) reads each of its samples once. LitData's
    default for small byte samples deserialized 256-sample windows that such a worker's shuffle
    blocks straddle, re-reading a window every few samples: that worker ran ~40 % slower."""
    import multiprocessing

    import numpy as np
    from litdata.streaming.serializers import BytesSerializer
    from torchvision.transforms.functional import pil_to_tensor

    from core.shards import ImageShards, pack_split, shard_loader

    count = 700
    images = np.random.default_rng(0).integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    targets = [k % 10 for k in range(count)]
    assert pack_split(images, targets, str(tmp_path / "train"), workers=1, skip_corrupt=False) == count
    reads = multiprocessing.Value("i", 0)  # bytes leaves deserialized, in every loader worker
    deserialize = BytesSerializer.deserialize

    def counted(self, data):
        with reads.get_lock():
            reads.value += 1
        return deserialize(self, data)

    monkeypatch.setattr(BytesSerializer, "deserialize", counted)
    dataset = ImageShards(str(tmp_path / "train"), targets, pil_to_tensor, shuffle=True, seed=0, with_index=True)
    seen = [int(i) for _, _, index in shard_loader(dataset, batch_size=8, num_workers=2) for i in index]
    assert sorted(seen) == list(range(count))
    assert reads.value == 2 * count  # the name and the image of each sample, once


# --- 2 gloo processes ----------------------------------------------------------------------------


def _rank(rank: int, init_file: str, config_file: str, out: str) -> None:
    """One DDP rank: the indices its train loader streams in 2 epochs (seeds 0 and 1) and its val loader."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))  # fmt: skip
    config = OmegaConf.load(config_file)
    seen: dict[str, list[int]] = {}
    for seed in (0, 1):
        os.environ["PL_GLOBAL_SEED"] = str(seed)  # what seed_everything(seed) publishes
        dm = datamodule(config)
        dm.datasets["train"].with_index = True
        loader = dm.train_dataloader()
        for epoch in (0, 1):
            seen[f"seed{seed}_epoch{epoch}"] = [i for _, _, index in loader for i in index.tolist()]
    dm.datasets["val"].with_index = True
    seen["val"] = [i for _, _, index in dm.val_dataloader() for i in index.tolist()]
    Path(out).write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_ranks_stream_disjoint_parts_in_a_new_order_each_epoch(shapes, tmp_path):
    config, out = shapes
    config_file = tmp_path / "data.yaml"
    # batch_size 10 divides each rank's 60 samples (one chunk per pack worker): LitData's DDP drop_last then drops none
    changes = {"format": "shards", "shards": str(out), "num_workers": 0, "batch_size": 10}
    OmegaConf.save(OmegaConf.merge(config, changes), config_file)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.datamodules.test_shards",
                "--rank",
                str(r),
                "--init-file",
                str(tmp_path / "init"),
                "--config",
                str(config_file),
                "--out",
                str(tmp_path / f"rank{r}.json"),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for r in range(WORLD_SIZE)
    ]
    logs = []
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r][-3000:]}"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    for key in ("seed0_epoch0", "seed0_epoch1", "seed1_epoch0"):
        a, b = ranks[0][key], ranks[1][key]
        assert len(a) == len(b) == TRAIN // 2, key  # equal parts: ranks stay in step
        assert not set(a) & set(b), f"{key}: a sample on both ranks"
        assert sorted(a + b) == list(range(TRAIN)), f"{key}: the ranks' union is not the split"
    assert ranks[0]["seed0_epoch0"] != ranks[0]["seed0_epoch1"], "the order did not change with the epoch"
    assert ranks[0]["seed0_epoch0"] != ranks[0]["seed1_epoch0"], "the order did not change with the seed"
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == list(range(VAL))  # evaluation: every sample once


# --- training from shards: DDP and a killed run ---------------------------------------------------


def train_args(config, out: Path, run_dir: Path, journal: Path) -> list[str]:
    return [
        "experiment=fgvc_icassava2019",
        "data=fgvc_imagefolder",
        "data._target_=tests.datamodules.shard_journal.IndexedTrainClassFolders",
        f"data.root={config.root}",
        "data.num_classes=10",
        "data.test_flat=false",
        "data.solution_file=null",
        "data.sampler=instance",
        "data.image_size=32",
        "data.batch_size=10",  # divides each rank's 60 samples: LitData's DDP drop_last drops none
        "data.num_workers=1",
        "data.format=shards",
        f"data.shards={out}",
        "task.competition=icassava2019",
        "task.prior_adjustment=none",
        "task.backbone=test_efficientnet",
        "task.pretrained=false",
        "callbacks.rich_progress_bar=null",
        "logger=csv",
        f"paths.output_dir={run_dir}",
        f"paths.log_dir={run_dir.parent / 'logs'}",
        "+callbacks.journal._target_=tests.datamodules.shard_journal.SampleJournal",
        f"+callbacks.journal.path={journal}",
    ]


def fgvc_shards(shapes, tmp_path) -> tuple[object, Path]:
    config, _ = shapes
    out = tmp_path / "fgvc_shards"
    args = [f"data.root={config.root}", "data.num_classes=10", "data.test_flat=false", "data.solution_file=null"]
    assert pack_main(["data=fgvc_imagefolder", *args, "data.image_size=32", "--out", str(out), "--workers", "2"]) == 0
    return config, out


def read_journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_ddp_training_from_shards_sees_each_sample_once_per_epoch(shapes, tmp_path):
    config, out = fgvc_shards(shapes, tmp_path)
    journal = tmp_path / "journal.jsonl"
    args = [*train_args(config, out, tmp_path / "run", journal), "trainer=ddp_cpu", "trainer.max_epochs=2"]
    done = subprocess.run([sys.executable, "train.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = read_journal(journal)
    by = {(r["epoch"], r["rank"]): [i for x in records if (x["epoch"], x["rank"]) == (r["epoch"], r["rank"])
                                    for i in x["indices"]] for r in records}  # fmt: skip
    for epoch in (0, 1):
        a, b = by[(epoch, 0)], by[(epoch, 1)]
        assert len(a) == len(b) and not set(a) & set(b), f"epoch {epoch}: a sample on both ranks"
        assert sorted(a + b) == list(range(TRAIN)), f"epoch {epoch}: the ranks' union is not the split"
    assert by[(0, 0)] != by[(1, 0)]


@pytest.mark.slow
def test_a_killed_run_resumes_mid_epoch_without_repeating_samples(shapes, tmp_path):
    config, out = fgvc_shards(shapes, tmp_path)
    journal, run_dir = tmp_path / "journal.jsonl", tmp_path / "run"
    args = [*train_args(config, out, run_dir, journal), "trainer.max_epochs=2",
            "callbacks.last_checkpoint.every_n_train_steps=3", "+callbacks.journal.pace=0.3"]  # fmt: skip
    last = run_dir / "checkpoints" / "last.ckpt"
    first = subprocess.Popen([sys.executable, "train.py", *args], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # killed mid-epoch, a few steps after a saved checkpoint
            steps = [r["step"] for r in read_journal(journal)] if journal.exists() else []
            if last.exists() and steps and max(steps) >= 8:
                break
            assert first.poll() is None, "the first run ended before it could be killed"
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    saved_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    done = subprocess.run([sys.executable, "train.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    records = read_journal(journal)
    pids = list(dict.fromkeys(r["pid"] for r in records))
    assert len(pids) == 2
    before = [i for r in records if r["pid"] == pids[0] and r["step"] <= saved_step for i in r["indices"]]
    after = [i for r in records if r["pid"] == pids[1] and r["epoch"] == 0 for i in r["indices"]]
    assert 0 < saved_step < TRAIN // 10 and before and after, "not killed mid-epoch 0"  # 12 steps of 10 per epoch
    assert not set(before) & set(after), "a sample trained before the checkpoint was trained again"
    total = json.loads((out / META_FILE).read_text())["splits"]["train"]["packed"]
    assert sorted(before + after) == list(range(total)), "the resumed epoch did not cover the rest of the split"
    next_epoch = [i for r in records if r["pid"] == pids[1] and r["epoch"] == 1 for i in r["indices"]]
    assert sorted(next_epoch) == list(range(total)), "the epoch after the resumed one is not a whole new pass"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one rank of the shard DDP harness")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--init-file", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    _rank(a.rank, a.init_file, a.config, a.out)
