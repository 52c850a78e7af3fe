"""The landmark system end to end on a small generated GLDv2: the experiment recipes through
fast_dev_run; a short run whose submissions, scored by the CLI, equal the logged test metrics
(global and D2R, Public and Private) and which eval.py reproduces from the checkpoint; the test
phase on 2 gloo processes equal to one process; predict.py equal to the task on the same files;
the models, the D2R kernel and the faiss indexes on small hand-checked cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.resolvers import PROJECT_ROOT
from core.training import train
from tasks.landmarks.d2r import RegionalAggregator, region_members
from tasks.landmarks.model import GlobalDescriptor, landmark_detector
from tasks.landmarks.module import detector_recall
from tasks.landmarks.search import alpha_query_expansion, build_index, search

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["logger=csv", "callbacks.rich_progress_bar=null", "data.num_workers=0"]
D2R_SMALL = ["task.d2r.codebook_size=8", "task.detector.score_threshold=0.0"]


@pytest.mark.parametrize(
    "experiment, extra",
    [
        ("landmarks_global", []),
        ("landmarks_d2r", D2R_SMALL),
        ("landmarks_d2r", [*D2R_SMALL, "task.d2r.aggregation=rasmk", "task.search.query_expansion=true"]),
    ],
)
def test_experiments_run_fast_dev_run(experiment, extra, cfg_train, small_data):
    cfg = cfg_train([f"experiment={experiment}", "trainer=debug", *small_data("gldv2"), *QUICK, *extra])
    metrics = train(cfg)
    assert "val/gap" in metrics


@pytest.mark.slow
def test_short_run_submissions_score_as_logged(cfg_train, cfg_eval, small_data, tmp_path):
    run_dir = tmp_path / "run"
    cfg = cfg_train(
        ["experiment=landmarks_d2r", *small_data("gldv2"), *QUICK, *D2R_SMALL, "trainer.max_epochs=2"], run_dir
    )
    train(cfg)
    logged = json.loads((run_dir / "landmarks_results.json").read_text())
    root = cfg.data.root
    for variant, suffix in (("global", ""), ("d2r", "_d2r")):
        for track, name in (("recognition", "gap"), ("retrieval", "map100")):
            out = tmp_path / f"{track}{suffix}.json"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tasks.landmarks.evaluate",
                    str(run_dir / f"submission_{track}{suffix}.csv"),
                    "--solution",
                    f"{root}/{track}_solution_v2.1.csv",
                    "--track",
                    track,
                    "--out",
                    str(out),
                ],
                cwd=PROJECT_ROOT,
                check=True,
                capture_output=True,
            )
            scored = json.loads(out.read_text())
            for usage in ("public", "private"):
                assert scored[usage] == pytest.approx(logged[f"test/{name}_{variant}_{usage}"], abs=1e-9)
    assert (run_dir / "retrieval_examples.png").stat().st_size > 1000
    assert 0.0 <= logged["test/detector_recall50"] <= 1.0  # measured on boxes_split2 (held out)
    # eval.py on the saved checkpoint reproduces every test figure.
    from core.training import evaluate

    eval_dir = tmp_path / "eval"
    ckpt = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]  # what train's test used
    overrides = ["experiment=landmarks_d2r", *small_data("gldv2"), "data.num_workers=0", *D2R_SMALL]
    evaluate(cfg_eval([*overrides, f"ckpt_path={ckpt}"], eval_dir))
    again = json.loads((eval_dir / "landmarks_results.json").read_text())
    assert again == pytest.approx(logged, abs=1e-6)


def test_descriptor_and_detector_train_every_parameter():
    model = GlobalDescriptor("test_resnet", dim=16)
    descriptors, local = model(torch.rand(2, 3, 64, 64))
    assert torch.allclose(descriptors.norm(dim=1), torch.ones(2), atol=1e-5) and local.shape[-1] == 4
    (descriptors.sum() + local.mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    detector = landmark_detector("test_resnet", 64).train()
    target = [{"boxes": torch.tensor([[8.0, 10.0, 40.0, 60.0]]), "labels": torch.tensor([1])}]
    losses = detector([torch.rand(3, 64, 64)], target)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def test_regions_and_selective_match_kernel_by_hand():
    # 2x2 map: the whole image, then a box over the left column.
    members = region_members((2, 2), np.array([[0.0, 0.0, 0.5, 1.0]]))
    assert [m.tolist() for m in members] == [[0, 1, 2, 3], [0, 2]]
    codebook = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    agg = RegionalAggregator(codebook, alpha=3.0, tau=0.0)
    local = np.array([[0.9, 0.8], [0.1, 0.2]], dtype=np.float32).reshape(2, 1, 2)  # C=2, h=1, w=2
    image = agg.rasmk(local, np.zeros((0, 4)))
    # Both cells quantise to word 0 ([0.9,0.1] and [0.8,0.2] normalised are nearer (1,0)).
    assert image.words.tolist() == [0]
    assert agg.asmk_similarity(image, image) == pytest.approx(1.0)  # a unit vector with itself, gamma = 1
    assert agg.selective(np.array([-0.5, 0.5])).tolist() == [0.0, 0.125]  # tau = 0 cuts negatives; 0.5^3
    vlad = agg.rvlad(local, np.zeros((0, 4)))
    assert vlad.shape == (4,) and np.linalg.norm(vlad) == pytest.approx(1.0)


def test_detector_recall_by_hand():
    truth = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]
    # The first box found exactly, the second overlapped by a quarter (IoU 0.25): recall 1/2.
    detected = np.array([[0.0, 0.0, 0.5, 0.5], [0.75, 0.75, 1.0, 1.0]])
    assert detector_recall([(truth, detected)]) == 0.5
    assert detector_recall([(truth, detected), ([[0.1, 0.1, 0.2, 0.2]], np.zeros((0, 4)))]) == pytest.approx(1 / 3)


def test_approximate_index_finds_the_flat_neighbours():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    _, flat = search(build_index(x, "flat"), q, 1)
    assert flat[:, 0].tolist() == list(range(50))
    for kind in ("hnsw", "ivf"):
        _, approx = search(build_index(x, kind, nlist=16, nprobe=8), q, 1)
        assert (approx[:, 0] == flat[:, 0]).mean() >= 0.9
    _, expanded = alpha_query_expansion(build_index(x, "flat"), q, x, 3)
    assert expanded[:, 0].tolist() == list(range(50))


@pytest.mark.slow
def test_predict_product_equals_the_task_on_the_same_files(cfg_train, small_data, tmp_path):
    import csv

    from core.prediction import predict
    from datamodules.gldv2 import GLDv2DataModule
    from tasks.landmarks.module import LandmarkRetrievalTask
    from tests.conftest import compose_config

    run_dir = tmp_path / "run"
    cfg = cfg_train(
        ["experiment=landmarks_global", *small_data("gldv2"), *QUICK, "trainer.max_epochs=1", "test=false"], run_dir
    )
    train(cfg)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    root = cfg.data.root
    out = tmp_path / "pred"
    overrides = [
        "task=landmarks",
        f"ckpt_path={ckpt}",
        f"input={root}/test",
        f"product.writer.index={root}/index",
        "product.writer.top_k=3",
    ]
    predict(compose_config("predict", overrides, out, tmp_path / "data"))
    with open(out / "recognition.csv", newline="") as f:
        recognition = {Path(r["id"]).stem: r["landmarks"] for r in csv.DictReader(f)}
    with open(out / "retrieval.csv", newline="") as f:
        retrieval = {Path(r["id"]).stem: [Path(i).stem for i in r["images"].split()] for r in csv.DictReader(f)}
    # The same images through the DataModule and the task loaded from the checkpoint.
    dm = GLDv2DataModule(root, num_classes=cfg.data.num_classes, image_size=cfg.data.image_size, num_workers=0)
    dm.setup()
    task = LandmarkRetrievalTask.load_from_checkpoint(ckpt, map_location="cpu").eval()
    with torch.no_grad():
        q = torch.stack([dm.datasets["test"][i]["image"] for i in range(len(dm.ids["test"]))])
        x = torch.stack([dm.datasets["index"][i]["image"] for i in range(len(dm.ids["index"]))])
        qd, xd = task.descriptor(q)[0].numpy(), task.descriptor(x)[0].numpy()
        score, cls = task.arcface.get_cosine(task.descriptor(q)[0]).max(1)
    assert set(recognition) == set(dm.ids["test"])
    for n, query in enumerate(dm.ids["test"]):
        landmark, s = recognition[query].split()
        assert int(landmark) == dm.landmark_ids[int(cls[n])] and float(s) == pytest.approx(float(score[n]), abs=1e-4)
    _, ids = search(build_index(xd, "flat"), qd, 3)
    for n, query in enumerate(dm.ids["test"]):
        assert retrieval[query] == [dm.ids["index"][i] for i in ids[n]]
    assert (out / "retrieval_examples.png").exists()


@pytest.mark.slow
def test_ddp_test_phase_equals_one_process(small_data, shared_data_dir, cfg_eval, tmp_path):
    """train.py on 2 gloo processes (each extracts its shard, descriptors gathered before search):
    every test figure equals eval.py's on one process with the same checkpoint, and the
    submissions hold every test query once."""
    from core.training import evaluate
    from tests.helpers import read_metrics, run_entry

    data = small_data("gldv2")
    logs = tmp_path / "logs"
    args = ["experiment=landmarks_d2r", *data, *QUICK, *D2R_SMALL, "trainer=ddp_cpu", "trainer.max_epochs=1"]
    run_entry("train.py", [*args, f"paths.log_dir={logs}", f"paths.data_dir={shared_data_dir}", "run_id=ddp"])
    (run_dir,) = logs.glob("*/runs/ddp")
    ddp = json.loads((run_dir / "landmarks_results.json").read_text())
    best = read_metrics(run_dir)["best_checkpoint"]
    eval_dir = tmp_path / "eval"
    evaluate(
        cfg_eval(["experiment=landmarks_d2r", *data, "data.num_workers=0", *D2R_SMALL, f"ckpt_path={best}"], eval_dir)
    )
    single = json.loads((eval_dir / "landmarks_results.json").read_text())
    assert single == pytest.approx(ddp, abs=1e-9) and len(single) == 9
    root = Path(data[-1].split("=", 1)[1])  # small_data pins data.root last
    queries = len((root / "test.csv").read_text().splitlines()) - 1
    assert len((run_dir / "submission_retrieval_d2r.csv").read_text().splitlines()) - 1 == queries
