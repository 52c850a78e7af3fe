"""The FGVC tasks end to end through the real configs: every experiment config runs, EM priors and
the submission come out, the scoring command reproduces the logged metric, checkpoints load alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.resolvers import PROJECT_ROOT
from core.training import train
from tasks.fgvc.module import FineGrainedTask, MultiLabelFineGrainedTask

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "task.backbone=test_efficientnet",
    "task.pretrained=false",  # the recipe starts from ImageNet weights; the generated copy trains from scratch
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=16",
    "logger=csv",
    "callbacks.rich_progress_bar=null",
    "data.augment.auto_augment=null",
]
EXPERIMENTS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "experiment").glob("fgvc_*.yaml"))
QUICK = {"fgvc_inaturalist2019", "fgvc_imet2019"}


@pytest.mark.parametrize(
    "experiment", [e if e in QUICK else pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS]
)
def test_every_fgvc_experiment_runs_fast_dev_run(experiment, cfg_train, tmp_path):
    cfg = cfg_train([f"experiment={experiment}", "trainer=debug", *SMALL])
    metrics = train(cfg)
    name = cfg.monitor.metric.split("/", 1)[1]
    assert f"test/{name}" in metrics
    submission = (tmp_path / "run" / "submission.csv").read_text().splitlines()
    from tasks.fgvc.protocol import competition

    comp = competition(cfg.task.competition)
    assert submission[0] == f"{comp.id_column},{comp.label_column}"


def test_experiments_cover_every_competition():
    from tasks.fgvc.protocol import COMPETITIONS

    assert {f"fgvc_{name}" for name in COMPETITIONS} == set(EXPERIMENTS)


@pytest.fixture(scope="module")
def inat_run(tmp_path_factory):
    """Two epochs on the generated iNaturalist 2019 copy with taxonomy heads and EM."""
    import torch

    from tests.conftest import compose_config

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("inat_em")
    cfg = compose_config(
        "train",
        [
            "experiment=fgvc_inaturalist2019",
            *SMALL,
            "trainer.max_epochs=2",
            "data.generator.max_per_class=20",
            "task.optimizer.opt=adamw",
            "task.optimizer.lr=0.005",
            "~task.optimizer.momentum",
        ],
        base / "run",
        base / "data",
    )
    metrics = train(cfg)
    return cfg, metrics, base / "run"


def test_em_writes_priors_and_logs_both_metrics(inat_run):
    cfg, metrics, run = inat_run
    assert {"test/top1_error", "test/top1_error_em"} <= set(metrics)
    priors = json.loads((run / "priors.json").read_text())
    assert priors["converged"] and len(priors["test_prior"]) == 24
    # posteriors calibrated on validation (bias-corrected temperature scaling) before EM
    assert priors["calibration"] == "bcts" and priors["temperature"] > 0 and len(priors["biases"]) == 24
    assert "test/top1_error_calibrated" in metrics
    assert sum(priors["test_prior"]) == pytest.approx(1.0)
    counts = np.bincount(
        [a["category_id"] for a in json.loads((Path(cfg.data.root) / "train2019.json").read_text())["annotations"]],
        minlength=24,
    )
    # the experiment samples square-root: the network's training prior is sqrt(n_c), normalized
    assert cfg.data.sampler == "sqrt"
    assert priors["train_prior"] == pytest.approx((np.sqrt(counts) / np.sqrt(counts).sum()).tolist())
    assert (run / "confused_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the picture and the priors table also went to the experiment logger (CSV media here)
    assert list((run / "csv").rglob("media/val/confused_pairs/*.png"))
    assert list((run / "csv").rglob("media/test/priors/*.csv"))


def test_scoring_command_reproduces_the_logged_metric(inat_run):
    cfg, metrics, run = inat_run
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.fgvc.evaluate",
            "inaturalist2019",
            str(run / "submission.csv"),
            str(Path(cfg.data.root) / "solution.csv"),
            "--json",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    # with EM on, the submission holds the adjusted predictions
    assert json.loads(proc.stdout)["top1_error"] == pytest.approx(metrics["test/top1_error_em"], abs=1e-6)


def test_checkpoint_loads_alone_with_taxonomy_and_prior(inat_run):
    _, _, run = inat_run
    task = FineGrainedTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert task.hparams.competition == "inaturalist2019" and task.hparams.taxonomy == {"genus": 6, "family": 2}
    assert task.taxonomy_table[:, 0].tolist() == [c // 4 for c in range(24)]
    assert float(task.train_prior.sum()) == pytest.approx(1.0)


def test_taxonomy_size_mismatch_names_the_key(cfg_train):
    cfg = cfg_train(["experiment=fgvc_inaturalist2019", "trainer=debug", *SMALL, "task.taxonomy={genus: 5}"])
    with pytest.raises(ValueError, match=r"task.taxonomy.genus=5 but the data set has 6 genus groups"):
        train(cfg)


def test_multilabel_threshold_is_tuned_on_validation_and_reused(cfg_train, tmp_path):
    cfg = cfg_train(
        [
            "experiment=fgvc_imet2019",
            *SMALL,
            "trainer.max_epochs=1",
            "task.optimizer.opt=adamw",
            "task.optimizer.lr=0.005",
            "~task.optimizer.momentum",
        ]
    )
    metrics = train(cfg)
    task = MultiLabelFineGrainedTask.load_from_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    assert metrics["test/f2_threshold"] == pytest.approx(task.threshold)
    assert metrics["val/f2_threshold"] == pytest.approx(task.threshold)
    grid = [round(0.05 * k, 2) for k in range(1, 20)]
    assert task.threshold in grid


def test_transfer_command_ranks_source_classes_and_writes_the_subset(inat_run, tmp_path):
    """The EMD ranking command on real data configs: the iNat copy as source, a Herbarium copy of
    sheet-drawn species as target, features from the trained checkpoint."""
    cfg, _, run = inat_run
    data_dir = Path(cfg.paths.data_dir)
    source = f"data=inaturalist2019 data.root={cfg.data.root} data.image_size=32 data.num_workers=0"
    target = (
        f"data=herbarium2019 data.root={tmp_path / 'herb'} data.num_classes=6 data.image_size=32 "
        "data.num_workers=0 data.generator.max_per_class=6 +data.generator.test_total=12 "
        f"paths.data_dir={data_dir}"
    )
    out = tmp_path / "subset.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tasks.fgvc.transfer",
            "--ckpt",
            str(run / "checkpoints" / "last.ckpt"),
            "--source",
            source,
            "--target",
            target,
            "--top-k",
            "5",
            "--out",
            str(out),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    ranking = record["ranking"]
    assert len(ranking) == 24 and record["gamma"] == 0.01
    similarities = [r["similarity"] for r in ranking]
    assert similarities == sorted(similarities, reverse=True)
    assert all(r["similarity"] == pytest.approx(np.exp(-0.01 * r["emd"])) for r in ranking)
    assert record["chosen_classes"] == [r["class_index"] for r in ranking[:5]]
    assert record["chosen_images"] == sum(r["images"] for r in ranking[:5])
    assert "chose 5 classes" in proc.stdout


def test_predict_on_a_users_images(inat_run, tmp_path):
    from tests.helpers import run_entry

    cfg, _, run = inat_run
    images = sorted((Path(cfg.data.root) / "test2019").glob("*.jpg"))[:5]
    folder = tmp_path / "mine"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "predict"
    run_entry(
        "predict.py",
        [
            "task=fgvc",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"input={folder}",
            f"output_dir={out}",
            "product.inputs.num_workers=0",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 6 and rows[0].startswith("input,class_1,label_1,score_1")
    assert "Genus" in rows[1]  # the iNaturalist species names stored in the checkpoint


@pytest.mark.slow
def test_two_gloo_processes_grade_every_test_image_once(tmp_path):
    """trainer=ddp_cpu: the test predictions of both ranks (a DistributedSampler pads the odd count)
    are gathered, de-duplicated, adjusted by EM and written once; the scorer agrees with the log."""
    from tests.helpers import read_metrics, run_entry

    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    run_entry(
        "train.py",
        [
            "experiment=fgvc_inaturalist2019",
            "trainer=ddp_cpu",
            *SMALL,
            "trainer.max_epochs=1",
            "data.generator.max_per_class=12",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    solution = data_dir / "fgvc" / "inaturalist2019" / "solution.csv"
    test_images = len(solution.read_text().splitlines()) - 1
    assert test_images % 2 == 1  # the padded case
    submission = (run_dir / "submission.csv").read_text().splitlines()
    assert len(submission) - 1 == test_images and len(set(submission)) == len(submission)
    from tasks.fgvc.protocol import competition, score_files

    score = score_files(competition("inaturalist2019"), run_dir / "submission.csv", solution)
    assert score == pytest.approx(read_metrics(run_dir)["metrics"]["test/top1_error_em"], abs=1e-6)


def test_a_checkpoint_of_this_task_pretrains_another(inat_run):
    """task.pretrained_path=<an FGVC checkpoint>: the network's tensors load (its taxonomy heads and
    prior buffers are not offered), and a classifier of another size starts anew."""
    import torch

    _, _, run = inat_run
    ckpt = run / "checkpoints" / "last.ckpt"
    task = FineGrainedTask("test_efficientnet", 6, 32, competition="herbarium2019", pretrained_path=str(ckpt))
    source = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(task.model.conv_stem.weight, source["model.conv_stem.weight"])
    assert task.model.get_classifier().weight.shape[0] == 6
    assert task.hparams.pretrained_path == str(ckpt)
