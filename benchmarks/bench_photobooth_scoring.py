"""The Photobooth decisions measured on the validation clips (where they are made) and on the test
clips (the report): the frame score on the frame's own values or on smoothed ones, and the learned
attention over faces against the size prior alone.

    python benchmarks/bench_photobooth_scoring.py --checkpoint <PhotoboothTask .ckpt> --root <clips root>

Per split and variant: precision, recall, F1 of captured moments, the mean distance from each
capturing shot to the moment's labelled best frame and the share of shots on it, and the mean absolute
error of the frame's global expression score against its label (attention vs size prior)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", required=True, help="a clips root (datamodules/photobooth.py layout)")
    parser.add_argument("--splits", nargs="+", default=["val", "test"])
    args = parser.parse_args()
    import torch

    from core.checkpoint import load_task
    from datamodules.photobooth import PhotoboothClipsDataModule
    from tasks.photobooth.metrics import best_frame_offsets, match_shots
    from tasks.photobooth.module import PhotoboothTask

    torch.set_num_threads(1)
    task = load_task(args.checkpoint, PhotoboothTask).eval()
    hp = task.hparams
    data = PhotoboothClipsDataModule(
        args.root, crop_size=hp.crop_size, frame_size=hp.frame_size, max_faces=hp.max_faces
    )
    data.setup()
    variants = {
        "attention, frame's own score": (True, False),
        "attention, smoothed score": (True, True),
        "size prior alone, frame's own score": ("size_prior", False),
    }
    print("| split | variant | precision | recall | F1 | shot to best (mean frames) | shots on the best frame |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    mae = {}
    for split in args.splits:
        loader = data.val_dataloader() if split == "val" else data.test_dataloader()
        outputs = [(clip["moments"], clip["expression_target"].numpy(), task.clip_outputs(clip)) for clip in loader]
        mae[split] = {
            name: float(np.mean(np.concatenate([np.abs(out[key] - target) for _, target, out in outputs])))
            for name, key in (("attention", "expression"), ("size prior alone", "size_expression"))
        }
        for name, (attention, smoothed) in variants.items():
            task.scoring.smoothed_score = smoothed
            captured = shots = moments = 0
            offsets: list[int] = []
            for clip_moments, _, out in outputs:
                taken = task.shots(out, attention=attention)[0]
                captured += match_shots(taken, clip_moments)
                shots, moments = shots + len(taken), moments + len(clip_moments)
                offsets += best_frame_offsets(taken, clip_moments)
            p, r = captured / max(shots, 1), captured / max(moments, 1)
            f1 = 2 * p * r / (p + r) if p + r else 0.0
            mean_offset = np.mean(offsets) if offsets else float("nan")
            on_best = np.mean(np.array(offsets) == 0) if offsets else 0.0
            print(
                f"| {split} | {name} | {p:.2f} | {r:.2f} | {f1:.2f} | {mean_offset:.2f} | {on_best:.0%} |",
                flush=True,
            )
        task.scoring.smoothed_score = False
    print("\n| split | expression score MAE: attention | size prior alone |")
    print("| --- | --- | --- |")
    for split, values in mae.items():
        print(f"| {split} | {values['attention']:.4f} | {values['size prior alone']:.4f} |")


if __name__ == "__main__":
    main()
