"""TALNet geometry (anchors, receptive-field alignment, context, SoI pooling, NMS), the model's
gradients, and the task end to end on generated raw videos: train, eval, fusion, scoring command."""

import json
from pathlib import Path

import pytest
import torch

from core.training import evaluate, train
from tasks.talnet.anchors import (
    anchor_segments,
    decode_segments,
    encode_segments,
    extend_with_context,
)
from tasks.talnet.model import (
    ReceptiveFieldAlignedTower,
    TALNetStream,
    aligned_dilation,
    soi_pool,
    tower_receptive_field,
)
from tasks.talnet.nms import temporal_nms
from tests.conftest import SMALL_DATA as SMALL

SMALL_DATA = SMALL["thumos14"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_anchors_per_scale():
    anchors = anchor_segments(5, [2, 8])
    assert anchors.shape == (2, 5, 2)
    torch.testing.assert_close(anchors[0, 0], torch.tensor([-0.5, 1.5]))
    torch.testing.assert_close(anchors[1, 4], torch.tensor([0.5, 8.5]))  # centred on snippet 4


@pytest.mark.parametrize("scale", [4, 8, 16, 32, 64, 128])
def test_dilation_aligns_receptive_field_with_context_extended_anchor(scale):
    ratio = 0.5
    d = aligned_dilation(scale, ratio)
    assert d == max(1, round(scale * 2 / 5))
    assert abs(tower_receptive_field(d) - scale * (1 + 2 * ratio)) <= 2.5 or d == 1
    # measure the receptive field: a spike at position p changes the centre output iff p is inside
    tower = ReceptiveFieldAlignedTower(1, d)
    for conv in (tower.conv1, tower.conv2):
        torch.nn.init.constant_(conv.weight, 0.1)
        torch.nn.init.zeros_(conv.bias)
    rf = tower_receptive_field(d)
    length = 4 * rf
    x = torch.zeros(length, 1, length)
    x[torch.arange(length), 0, torch.arange(length)] = 100.0  # item p: spike at p
    with torch.no_grad():
        moved = tower(x, torch.ones(1, 1, length))[:, 0, length // 2] > 0
    touched = torch.nonzero(moved).flatten()
    assert int(touched.max() - touched.min() + 1) == rf == len(touched)


def test_context_extension_and_boundary_encoding():
    seg = torch.tensor([[10.0, 20.0]])
    torch.testing.assert_close(extend_with_context(seg, 0.5), torch.tensor([[5.0, 25.0]]))
    ref = torch.tensor([[8.0, 16.0]])
    delta = encode_segments(seg, ref)
    torch.testing.assert_close(delta, torch.tensor([[(15 - 12) / 8, torch.log(torch.tensor(10 / 8)).item()]]))
    torch.testing.assert_close(decode_segments(delta, ref), seg)


def test_temporal_nms_hand_worked():
    segs = torch.tensor([[0.0, 10.0], [1.0, 11.0], [20.0, 30.0], [0.0, 4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    # [1,11] overlaps [0,10] at 9/11 > 0.5: suppressed; [0,4] at 0.4: kept
    assert temporal_nms(segs, scores, 0.5).tolist() == [0, 2, 3]
    assert temporal_nms(segs, scores, 0.5, max_keep=2).tolist() == [0, 2]


def test_soi_pooling_takes_the_max_of_each_bin():
    features = torch.arange(10.0).view(1, 1, 10)  # snippet i holds value i (centre at i + 0.5)
    pooled = soi_pool(features, torch.tensor([0]), torch.tensor([[2.0, 6.0]]), bins=2, samples_per_bin=2)
    # samples at 2.5, 3.5 | 4.5, 5.5 -> snippet values 2, 3 | 4, 5
    torch.testing.assert_close(pooled, torch.tensor([[[3.0, 5.0]]]))


def test_stream_forward_backward_reaches_every_parameter():
    from tasks.talnet.losses import classifier_loss, proposal_loss

    torch.manual_seed(0)
    stream = TALNetStream(16, num_classes=3, hidden_dim=8, anchor_scales=[2, 4], soi_bins=4, classifier_hidden=8)
    x, mask = torch.randn(2, 16, 12), torch.ones(2, 12, dtype=torch.bool)
    fmap = stream.temporal_features(x, mask)
    logits, deltas = stream.spn(fmap, mask)
    anchors = anchor_segments(12, stream.anchor_scales)
    gt = torch.tensor([[2.0, 6.0]])
    spn = proposal_loss(logits[0], deltas[0], anchors, torch.ones(2, 12, dtype=torch.bool), gt)
    cls_logits, cls_deltas = stream.classifier(fmap, torch.tensor([0, 1]), torch.tensor([[2.0, 6.0], [0.0, 3.0]]))
    cls = classifier_loss(cls_logits, cls_deltas, torch.tensor([1, 3]), torch.zeros(2, 2), 3)
    (spn.total + cls.total).backward()
    missing = [n for n, p in stream.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_fast_dev_run_from_raw_videos(cfg_train, tmp_path):
    from tasks.talnet.evaluate import main as score

    # one batch holds all 3 test videos, so fast_dev_run scores the whole test subset
    cfg = cfg_train(["task=talnet", *SMALL_DATA, "trainer=debug", "data.batch_size=4"])
    metrics = train(cfg)
    run = tmp_path / "run"
    # metrics.json holds the numbers train returned (the rescoring below checks the mAP itself)
    assert json.loads((run / "metrics.json").read_text())["metrics"]["test/AR@100"] == metrics["test/AR@100"]
    results = json.loads((run / "detections_activitynet.json").read_text())
    video, dets = next(iter(results["results"].items()))
    assert video.startswith("video_test_") and {"label", "score", "segment"} <= set(dets[0])
    assert (run / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    # the scoring command gives the task's own number from the results JSON it wrote
    database = Path(cfg.data.root) / cfg.data.features_subdir / "thumos14.json"
    rescored = score([str(run / "detections_activitynet.json"), "--annotations", str(database)])
    assert rescored["mAP"] == pytest.approx(metrics["test/mAP"], abs=1e-6)
    assert rescored["videos"] == 3 and rescored["outside_detections"] == 0
    folder = Path(cfg.data.root) / "TH14_Temporal_Annotations_Test/annotations/annotation"
    assert score([str(run / "detections_activitynet.json"), "--annotations", str(folder)])["mAP"] == pytest.approx(
        metrics["test/mAP"], abs=1e-6
    )


def test_stream_override_shape_splits_into_one_job_per_modality():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["task.modalities=[rgb],[flow]"])
    jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    assert jobs == [["task.modalities=[rgb]"], ["task.modalities=[flow]"]]


@pytest.mark.slow
def test_separate_streams_fuse_from_checkpoints_and_eval_matches_train(cfg_train, cfg_eval, tmp_path):
    quick = [
        "trainer.max_epochs=2",
        "trainer.num_sanity_val_steps=0",
        "callbacks.rich_progress_bar=null",
    ]
    ckpts = {}
    for modality in ("rgb", "flow"):
        run = tmp_path / modality
        metrics = train(cfg_train(["task=talnet", *SMALL_DATA, *quick, f"task.modalities=[{modality}]"], run_dir=run))
        ckpts[modality] = run / "checkpoints" / "last.ckpt"
        assert ckpts[modality].exists()
    # eval on the checkpoint that train's test loop used reproduces its number
    best = json.loads((tmp_path / "flow" / "metrics.json").read_text())["best_checkpoint"]
    again = evaluate(cfg_eval(["task=talnet", *SMALL_DATA, f"ckpt_path={best}"], run_dir=tmp_path / "eval_flow"))
    assert again["test/mAP"] == pytest.approx(metrics["test/mAP"])
    assert again["test/AR@100"] == pytest.approx(metrics["test/AR@100"])
    fused = evaluate(
        cfg_eval(
            [
                "task=talnet_fusion",
                *SMALL_DATA,
                "ckpt_path=null",
                f"task.stream_checkpoints.rgb={ckpts['rgb']}",
                f"task.stream_checkpoints.flow={ckpts['flow']}",
            ],
            run_dir=tmp_path / "fusion",
        )
    )
    # the scoring command gives the fused model's own number from the results JSON it wrote
    from tasks.talnet.evaluate import main as score

    data = cfg_train(["task=talnet", *SMALL_DATA]).data
    database = Path(data.root) / data.features_subdir / "thumos14.json"
    rescored = score([str(tmp_path / "fusion" / "detections_activitynet.json"), "--annotations", str(database)])
    assert rescored["mAP"] == pytest.approx(fused["test/mAP"], abs=1e-6) and rescored["videos"] == 3
    assert (tmp_path / "fusion" / "timeline.png").exists()
    # the fused model carries each stream exactly as its own run trained it
    from tasks.talnet.module import TALNetTask

    fusion = TALNetTask(num_classes=20, feature_dim=96, stream_checkpoints={m: str(p) for m, p in ckpts.items()})
    with pytest.raises(ValueError, match="need the same anchors"):  # late fusion averages per anchor
        TALNetTask(
            num_classes=20,
            feature_dim=96,
            anchor_scales=[4, 8],
            stream_checkpoints={m: str(p) for m, p in ckpts.items()},
        )
    for modality, path in ckpts.items():
        alone = TALNetTask.load_from_checkpoint(path).model.streams[modality].state_dict()
        fused_stream = fusion.model.streams[modality].state_dict()
        assert alone.keys() == fused_stream.keys()
        assert all(torch.equal(alone[k], fused_stream[k]) for k in alone)


def test_fusion_needs_a_checkpoint_per_named_stream(tmp_path):
    from tasks.talnet.module import TALNetTask

    with pytest.raises(FileNotFoundError, match="stream checkpoint for 'rgb'"):
        TALNetTask(num_classes=20, feature_dim=8, stream_checkpoints={"rgb": str(tmp_path / "none.ckpt")})
    with pytest.raises(ValueError, match="not among modalities"):
        TALNetTask(num_classes=20, feature_dim=8, modalities=["rgb"], stream_checkpoints={"flow": "x"})


def test_detections_of_a_video_do_not_depend_on_its_batch():
    from datamodules.thumos14_features import collate_videos
    from tasks.talnet.module import TALNetTask

    torch.manual_seed(0)
    task = TALNetTask(num_classes=4, feature_dim=8, hidden_dim=8, anchor_scales=[2, 4, 8]).eval()

    def video(length, vid):
        feats = {m: torch.rand(8, length) for m in ("rgb", "flow")}
        return {
            "video": f"v{vid}",
            "video_id": vid,
            "features": feats,
            "segments": torch.zeros(0, 2),
            "labels": torch.zeros(0, dtype=torch.long),
            "duration": length * 0.2,
            "t0": 0.1,
            "dt": 0.2,
        }

    short, long = video(20, 0), video(60, 1)
    alone = task.detect(collate_videos([short]))[0]
    padded = task.detect(collate_videos([short, long]))[0]
    assert len(alone["detections"]) > 0
    torch.testing.assert_close(alone["detections"], padded["detections"])
    torch.testing.assert_close(alone["proposals"], padded["proposals"])


def test_fast_dev_run_from_pre_extracted_features(cfg_train, tmp_path):
    from hydra.utils import instantiate

    raw = cfg_train(["task=talnet", *SMALL_DATA])
    instantiate(raw.data).prepare_data()  # generate + extract once (shared with the test above)
    features = Path(raw.data.root) / raw.data.features_subdir
    cfg = cfg_train(
        [
            "task=talnet",
            "data=thumos14_features",
            f"data.features_dir={features}",
            f"data.annotation_file={features / 'thumos14.json'}",
            "data.feature_dim=96",
            "data.feat_stride=2",
            "data.num_frames=5",
            "data.batch_size=4",
            "trainer=debug",
        ],
        run_dir=tmp_path / "features_run",
    )
    metrics = train(cfg)
    from tasks.talnet.evaluate import main as score

    # the scoring command gives the task's own number from the results JSON it wrote
    written = tmp_path / "features_run" / "detections_activitynet.json"
    rescored = score([str(written), "--annotations", str(features / "thumos14.json")])
    assert rescored["mAP"] == pytest.approx(metrics["test/mAP"], abs=1e-6)
    results = json.loads(written.read_text())
    assert sorted(results["results"]) == [
        "video_test_0000001",
        "video_test_0000002",
        "video_test_0000003",
    ]


@pytest.mark.parametrize("experiment", ["talnet_thumos14", "talnet_demo"])
def test_experiment_configs_compose_and_build(experiment, cfg_train):
    from hydra.utils import instantiate

    cfg = cfg_train([f"experiment={experiment}"])
    task = instantiate(cfg.task, _convert_="all")
    assert cfg.monitor.metric == "val/mAP" and task.hparams.feature_dim == cfg.data.feature_dim
    # every anchor scale gets its own tower, dilated for its (context-extended) length
    dilations = [tower.dilation for tower in task.model.streams["rgb"].spn.towers]
    assert len(dilations) == len(cfg.task.anchor_scales) and dilations == sorted(dilations)


def _video_item(length, vid, features):
    return {
        "video": f"v{vid}",
        "video_id": vid,
        "features": features,
        "segments": torch.zeros(0, 2),
        "labels": torch.zeros(0, dtype=torch.long),
        "duration": length * 0.2,
        "t0": 0.1,
        "dt": 0.2,
    }


def test_late_fusion_of_two_identical_streams_equals_one_stream():
    from datamodules.thumos14_features import collate_videos
    from tasks.talnet.module import TALNetTask

    torch.manual_seed(0)
    small = dict(num_classes=4, feature_dim=8, hidden_dim=8, anchor_scales=[2, 4, 8])
    one = TALNetTask(**small, modalities=["rgb"]).eval()
    x = torch.rand(8, 40)
    batch = collate_videos([_video_item(40, 0, {"rgb": x, "flow": x.clone()})])
    alone = one.detect(batch)[0]
    assert len(alone["detections"]) > 0
    for fusion in ("late", "union"):
        two = TALNetTask(**small, modalities=["rgb", "flow"], fusion=fusion).eval()
        for name in ("rgb", "flow"):
            two.model.streams[name].load_state_dict(one.model.streams["rgb"].state_dict())
        fused = two.detect(batch)[0]
        torch.testing.assert_close(fused["detections"], alone["detections"])
        torch.testing.assert_close(fused["proposals"], alone["proposals"])


def test_late_fusion_averages_logits_before_selection_and_softmax():
    """Two different streams: the late-fused detections equal those of one network whose SPN and
    classifier outputs are the element-wise means of the two (checked on the raw outputs)."""
    from datamodules.thumos14_features import collate_videos
    from tasks.talnet.module import TALNetTask

    torch.manual_seed(1)
    task = TALNetTask(num_classes=3, feature_dim=8, hidden_dim=8, anchor_scales=[2, 4]).eval()
    batch = collate_videos([_video_item(30, 0, {"rgb": torch.rand(8, 30), "flow": torch.rand(8, 30)})])
    fmaps = task.feature_maps(batch)
    rgb, flow = (task.model.streams[m] for m in ("rgb", "flow"))
    spn = [rgb.spn(fmaps["rgb"], batch["mask"]), flow.spn(fmaps["flow"], batch["mask"])]
    logits = (spn[0][0] + spn[1][0]) / 2
    deltas = (spn[0][1] + spn[1][1]) / 2
    segs, _ = task._propose(task.anchor_scales, logits, deltas, batch["mask"], 100)[0]
    index = torch.zeros(len(segs), dtype=torch.long)
    lengths = batch["mask"].sum(1)
    (la, da), (lb, db) = (s.classifier(fmaps[m], index, segs, lengths) for m, s in (("rgb", rgb), ("flow", flow)))
    probs, refined = task._classify(fmaps, index, segs, lengths, probabilities=True)
    torch.testing.assert_close(probs, ((la + lb) / 2).softmax(-1))
    torch.testing.assert_close(refined, (da + db) / 2)
    task.hparams.fusion = task.fusion = "union"
    probs_union, _ = task._classify(fmaps, index, segs, lengths, probabilities=True)
    torch.testing.assert_close(probs_union, (la.softmax(-1) + lb.softmax(-1)) / 2)


def test_early_fusion_is_one_stream_over_concatenated_features():
    from datamodules.thumos14_features import collate_videos
    from tasks.talnet.module import TALNetTask

    task = TALNetTask(num_classes=3, feature_dim=8, hidden_dim=8, anchor_scales=[2, 4], fusion="early")
    assert list(task.model.streams) == ["rgb+flow"]
    assert task.model.streams["rgb+flow"].input_norm.num_features == 16
    batch = collate_videos([_video_item(20, 0, {"rgb": torch.rand(8, 20), "flow": torch.rand(8, 20)})])
    task.train()
    loss = task.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="fusion=early has one stream"):
        TALNetTask(num_classes=3, feature_dim=8, fusion="early", stream_checkpoints={"rgb": "x"})
    with pytest.raises(ValueError, match="fusion must be one of"):
        TALNetTask(num_classes=3, feature_dim=8, fusion="mid")


def test_dilation_rules_paper_and_exact():
    # exact: 5d equals the context-extended anchor (2s at context 0.5); paper: s/6, doubled
    assert [aligned_dilation(s, 0.5) for s in (4, 8, 16, 32, 64, 128)] == [2, 3, 6, 13, 26, 51]
    assert [aligned_dilation(s, 0.5, "paper") for s in (6, 12, 24, 96)] == [2, 4, 8, 32]
    assert [aligned_dilation(s, 0.0, "paper") for s in (6, 12, 24, 96)] == [1, 2, 4, 16]
    with pytest.raises(ValueError, match="dilation rule"):
        aligned_dilation(8, 0.5, "other")


def test_highlight_refuses_unreadable_short_videos_and_unknown_extractor(tmp_path):
    import numpy as np

    from core.video import VideoDecodeError, write_video
    from datamodules.synthetic.thumos14 import write_corrupt_video
    from datamodules.thumos14_extract import SnippetFeatureExtractor
    from tasks.talnet.highlight import make_highlight
    from tasks.talnet.module import TALNetTask

    task = TALNetTask(num_classes=6, feature_dim=96, hidden_dim=8, anchor_scales=[2, 4])
    settings = SnippetFeatureExtractor().settings()  # 5-frame snippets at 10 fps
    short = write_video(tmp_path / "short.mp4", [np.zeros((32, 32, 3), np.uint8)] * 3, fps=10)
    with pytest.raises(ValueError, match=r"short.mp4: the video lasts 0.30 s .* shorter than one snippet"):
        make_highlight(short, task, tmp_path / "out", extractor_settings=settings)
    broken = write_corrupt_video(tmp_path / "broken.mp4", short)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        make_highlight(broken, task, tmp_path / "out", extractor_settings=settings)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        make_highlight(tmp_path / "missing.mp4", task, tmp_path / "out", extractor_settings=settings)
    with pytest.raises(ValueError, match="records no feature-extractor settings"):
        make_highlight(short, task, tmp_path / "out")


@pytest.mark.slow
def test_highlight_of_a_generated_video_lies_on_its_labelled_action(cfg_train, tmp_path):
    """Train a small RGB model on generated videos of one class, then cut the highlight of a test
    video with the command: the clip is the top detection plus context, and it lies on the
    video's longest labelled action."""
    from PIL import Image

    from core.video import open_video
    from datamodules.thumos14 import read_split_annotations
    from tasks.talnet.highlight import main as highlight

    data = [
        "data=thumos14",
        "data.generator.num_validation_videos=12",
        "data.generator.num_test_videos=2",
        "data.generator.num_action_classes=1",
        "data.generator.min_duration=10",
        "data.generator.max_duration=14",
        "data.generator.min_action=2.0",
        "data.generator.size=32",
        "data.batch_size=4",
    ]
    cfg = cfg_train(
        [
            "task=talnet",
            *data,
            "task.modalities=[rgb]",
            "trainer.max_epochs=25",
            "trainer.num_sanity_val_steps=0",
            "callbacks.rich_progress_bar=null",
        ],
        run_dir=tmp_path / "run",
    )
    train(cfg)
    ckpt = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"]
    root = Path(cfg.data.root)
    video = root / "videos/test/video_test_0000001.mp4"
    out = tmp_path / "share" / "clip.mp4"
    paths = highlight([str(video), "--checkpoint", ckpt, "--out", str(out)])
    assert paths["mp4"] == out and out.exists()
    record = json.loads(paths["detections"].read_text())
    top = record["highlight"]
    start, end = top["segment"]
    dets = record["results"]["video_test_0000001"]
    assert top["score"] == max(d["score"] for d in dets) and top["label"] == "BaseballPitch"
    context = 0.5 * (end - start)
    assert top["clip"] == pytest.approx(
        [max(0.0, start - context), min(record_duration(video), end + context)], abs=1e-6
    )
    actions = [
        s
        for s in read_split_annotations(root, "test", ["BaseballPitch"])
        if s.video == "video_test_0000001" and s.label == "BaseballPitch"
    ]
    longest = max(actions, key=lambda s: s.end - s.start)
    assert longest.start <= (start + end) / 2 <= longest.end
    clip = open_video(out)
    assert len(clip) / clip.get_avg_fps() == pytest.approx(top["clip"][1] - top["clip"][0], abs=0.25)
    gif = Image.open(paths["gif"])
    assert gif.is_animated and gif.info.get("loop") == 0
    assert paths["timeline"].read_bytes()[:4] == b"\x89PNG"


def record_duration(video):
    from datamodules.thumos14_extract import video_duration

    return video_duration(video)
