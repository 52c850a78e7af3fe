"""Score a Google Landmarks 2019 submission, Public and Private separately:

    python -m tasks.landmarks.evaluate <submission.csv> --solution <solution.csv> \
        --track recognition|retrieval [--out metrics.json]

Imports the standard library and core.data / core.io only: no torch, no Lightning."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.data import DataFormatError
from core.io import atomic_write_json
from datamodules.gldv2_files import TRACKS
from tasks.landmarks.protocol import score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.landmarks.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", type=Path)
    parser.add_argument("--solution", type=Path, required=True)
    parser.add_argument("--track", choices=TRACKS, required=True)
    parser.add_argument("--out", type=Path, default=None, help="write {track, metric, public, private} as JSON")
    args = parser.parse_args(argv)
    try:
        result = score(args.submission, args.solution, args.track)
    except (DataFormatError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    metric = "GAP" if args.track == "recognition" else "mAP@100"
    print(f"{metric} Public:  {result['public']:.6f}")
    print(f"{metric} Private: {result['private']:.6f}")
    if args.out is not None:
        payload = {"track": args.track, "metric": metric, **result}
        atomic_write_json(args.out, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
