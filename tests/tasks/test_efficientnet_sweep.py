"""The compound-scaling grid search through Hydra, the B0 recipe and transfer learning, end to end."""

from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

import core  # noqa: F401  (registers the config resolvers, core.registry)
from core.training import train
from tasks.efficientnet.complexity import count_params
from tasks.efficientnet.module import EfficientNetTask
from tasks.efficientnet.scaling import round_resolution
from tests.helpers import read_metrics, run_entry

# A small baseline and a small data set, so each job takes seconds (the cluster tests use them too).
SMALL_BASELINE = [
    "scaling.base_resolution=32",
    "scaling.base_width=0.25",
    "scaling.base_depth=0.34",
    "data.generator.train_per_class=8",
    "data.generator.val_per_class=4",
    "data.generator.test_per_class=4",
    "data.generator.image_size=48",
    "data.num_workers=0",
]
SMALL_RUN = [
    *SMALL_BASELINE,
    "data.batch_size=20",
    "trainer.max_epochs=1",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
]


def sweep_args(tmp_path: Path, data_dir: Path, sweep: Path) -> list[str]:
    return [
        "-m",
        "hparams_search=compound_scaling_cpu",
        *SMALL_RUN,
        # two candidates: the paper's triple and width-only scaling at the same FLOPs growth
        "hydra.sweeper.alpha=[1.2]",
        "hydra.sweeper.beta=[1.1]",
        "hydra.sweeper.gamma=[1.15]",
        "hydra.sweeper.dimensions=[compound,width]",
        "hydra.sweeper.include_baseline=false",
        f"data.root={data_dir / 'effnet_shapes'}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    ]


def test_two_candidate_sweep_end_to_end(tmp_path, shared_data_dir):
    sweep = tmp_path / "sweep"
    run_entry("train.py", sweep_args(tmp_path, shared_data_dir, sweep), env={"OMP_NUM_THREADS": "1"})

    jobs = {p.name: p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()}
    assert sorted(jobs) == ["0", "1"]
    accuracy = {}
    for name, job in jobs.items():
        record = read_metrics(job)
        accuracy[name] = record["metrics"]["val/acc_top1"]
        assert (job / "checkpoints" / "last.ckpt").exists()

    summary = json.loads((sweep / "summary.json").read_text())
    runs = {r["job"]: r for r in summary["runs"]}
    compound, width = runs["0"], runs["1"]
    assert (compound["alpha"], compound["beta"], compound["gamma"]) == (1.2, 1.1, 1.15)
    assert compound["dimension"] == "compound" and width["dimension"] == "width"
    assert width["beta"] == pytest.approx(math.sqrt(2)) and width["flops_factor"] == pytest.approx(2.0)
    # the resolution the rule picks reached the data: 32 x 1.15 = 36.8 -> 36; width-only keeps 32
    assert compound["image_size"] == round_resolution(32, 1.15) == 36 and width["image_size"] == 32
    # each run's accuracy is its own metrics.json value; the best is the argmax over finished runs
    assert {k: r["val_accuracy"] for k, r in runs.items()} == accuracy
    best = max(accuracy, key=accuracy.get)
    assert summary["best"]["job"] == best
    assert summary["comparison"][0]["compound"]["job"] == "0" and summary["comparison"][0]["width"]["job"] == "1"
    # measured parameters equal those of the trained network in the run's checkpoint
    for name, job in jobs.items():
        task = EfficientNetTask.load_from_checkpoint(job / "checkpoints" / "last.ckpt", map_location="cpu")
        assert runs[name]["params_m"] == pytest.approx(count_params(task.model) / 1e6, abs=1e-9)
        assert runs[name]["gmacs"] > 0
    # width-only scaling by sqrt(2) makes the network wider than compound's beta = 1.1
    assert width["params_m"] > compound["params_m"]

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"] and rows[0]["dimension"] == "compound"
    assert (sweep / "accuracy_vs_flops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 0 | compound | 1 | 1.200 | 1.100 | 1.150 |" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_sweep_resumes_skipping_finished_jobs(tmp_path, shared_data_dir):
    sweep = tmp_path / "sweep"
    args = sweep_args(tmp_path, shared_data_dir, sweep)
    run_entry("train.py", args, env={"OMP_NUM_THREADS": "1"})
    # job 1 "was killed": its metrics are gone; a re-run skips job 0 and redoes only job 1
    (sweep / "1" / "metrics.json").unlink()
    before = (sweep / "0" / "metrics.json").stat().st_mtime_ns
    out = run_entry("train.py", args, env={"OMP_NUM_THREADS": "1"})
    assert "Skipping 1 completed jobs" in out.stdout + out.stderr
    assert (sweep / "0" / "metrics.json").stat().st_mtime_ns == before
    assert (sweep / "1" / "metrics.json").exists()

    # step 2 of the method: the summary's command trains the best triple at phi = 1 and 2, with the
    # search's own settings, as a sweep of its own
    summary = json.loads((sweep / "summary.json").read_text())
    best = summary["best"]
    command = shlex.split(summary["scale_up_command"])
    assert command[:3] == ["python", "train.py", "-m"] and "data.batch_size=20" in command
    assert not any(arg.startswith(("hydra.sweep.dir=", "run_id=")) for arg in command)
    scaled = tmp_path / "scaled"
    run_entry("train.py", [*command[2:], f"hydra.sweep.dir={scaled}"], env={"OMP_NUM_THREADS": "1"})
    runs = json.loads((scaled / "summary.json").read_text())["runs"]
    assert [(r["dimension"], r["phi"]) for r in runs] == [("compound", 1.0), ("compound", 2.0)]
    for run in runs:
        assert (run["alpha"], run["beta"], run["gamma"]) == pytest.approx((best["alpha"], best["beta"], best["gamma"]))
        assert run["status"] == "done"
    assert runs[1]["gmacs"] > runs[0]["gmacs"]  # phi = 2 is the larger network


def test_b0_recipe_fast_dev_run(cfg_train, tmp_path):
    """experiment=efficientnet_b0 (RMSProp-TF, EMA, AutoAugment) through train(), on small shapes."""
    cfg = cfg_train(
        [
            "experiment=efficientnet_b0",
            "data=shapes",
            "data.image_size=64",
            "data.batch_size=8",
            "data.num_workers=0",
            "data.generator.train_per_class=4",
            "data.generator.val_per_class=2",
            "data.generator.test_per_class=2",
            f"data.root={tmp_path / 'shapes_b0'}",
            "trainer=debug",
            "logger=csv",
        ]
    )
    assert cfg.task.backbone == "compound_scaled_efficientnet_b0" and cfg.task.optimizer.opt == "rmsproptf"
    metrics = train(cfg)
    # fast_dev_run tests one batch of 8 images: a micro-averaged accuracy is a whole count of them
    assert metrics["test/acc_top1"] * 8 == pytest.approx(round(metrics["test/acc_top1"] * 8))
    assert metrics["test/acc_top1"] <= metrics["test/acc_top5"]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["metrics"]["test/acc_top1"] == metrics["test/acc_top1"]


@pytest.mark.parametrize("data", ["cifar100", "flowers102"])
def test_transfer_recipe_loads_the_checkpoint_and_fine_tunes(data, cfg_train, tmp_path):
    # 1. a small scaled network trained briefly on shapes: the "pretrained" checkpoint
    source = tmp_path / "source"
    small = ["task.backbone_kwargs.width_multiplier=0.25", "task.backbone_kwargs.depth_multiplier=0.34"]
    cfg = cfg_train(
        [
            "experiment=efficientnet_compound",
            "scaling.phi=0",
            "scaling.base_width=0.25",
            "scaling.base_depth=0.34",
            "scaling.base_resolution=32",
            "data=shapes",
            "data.num_workers=0",
            "data.generator.train_per_class=4",
            "data.generator.val_per_class=2",
            "data.generator.test_per_class=2",
            "data.image_size=32",
            f"data.root={tmp_path / 'shapes'}",
            "trainer.max_epochs=1",
            "logger=csv",
            "callbacks.rich_progress_bar=null",
        ],
        run_dir=source,
    )
    train(cfg)
    ckpt = source / "checkpoints" / "last.ckpt"
    pretrained = EfficientNetTask.load_from_checkpoint(ckpt, map_location="cpu")

    # 2. the transfer recipe, pointed at that checkpoint
    overrides = [
        f"experiment=efficientnet_b0_{data}",
        *small,
        f"task.pretrained_path={ckpt}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer=debug",
        "logger=csv",
    ]
    overrides += (
        ["data.generator.train_per_class=2", "data.generator.test_per_class=1"]
        if data == "cifar100"
        else ["data.generator.train_per_class=1", "data.generator.val_per_class=1", "data.generator.test_per_class=1"]
    )
    cfg = cfg_train(overrides, run_dir=tmp_path / "fine_tune")
    assert cfg.task.optimizer.opt == "sgd" and cfg.data.num_classes == cfg.task.num_classes
    task = instantiate(cfg.task, _convert_="all")
    source_state = pretrained.model.state_dict()
    for key, value in task.model.state_dict().items():
        if key.startswith("classifier."):
            assert value.shape[0] == cfg.data.num_classes  # a new head
        else:
            assert torch.equal(value, source_state[key]), key  # every backbone tensor came across
    metrics = train(cfg)
    assert metrics["test/acc_top1"] <= metrics["test/acc_top5"]
    record = json.loads((tmp_path / "fine_tune" / "metrics.json").read_text())
    assert record["metrics"]["test/acc_top1"] == metrics["test/acc_top1"]


def test_transfer_recipe_refuses_to_start_without_its_checkpoint(cfg_train, tmp_path, monkeypatch):
    """The recipe starts from the paper's ImageNet weights; an offline node without them in its Hugging
    Face cache stops with the file's name, never trains from scratch (tests/core/test_pretrained.py)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cfg = cfg_train(["experiment=efficientnet_b0_cifar100"])
    with pytest.raises(InstantiationException, match="timm/tf_efficientnet_b0.in1k/blob/main/model.safetensors") as err:
        instantiate(cfg.task, _convert_="all")
    assert isinstance(err.value.__cause__, FileNotFoundError)
