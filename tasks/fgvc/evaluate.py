"""Score a Kaggle submission CSV of an FGVC6 competition against its solution CSV (numpy and the
standard library only)::

    python -m tasks.fgvc.evaluate <competition> <submission.csv> <solution.csv> [--json]

The graders are :mod:`tasks.fgvc.protocol`; a bad file gives one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable

from tasks.fgvc.protocol import COMPETITIONS, competition, score_files


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.fgvc.evaluate",
        description="Score a Kaggle submission CSV of an FGVC6 competition against a solution CSV.",
    )
    parser.add_argument("competition", choices=sorted(COMPETITIONS))
    parser.add_argument("submission")
    parser.add_argument("solution")
    parser.add_argument("--json", action="store_true", help="print {metric: value} as JSON")
    args = parser.parse_args(list(argv) if argv is not None else None)
    comp = competition(args.competition)
    try:
        value = score_files(comp, args.submission, args.solution)
    except (FileNotFoundError, ValueError) as err:  # one line naming the file, no trace
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({comp.metric_name: value}))
    else:
        print(f"{comp.metric_name} = {value:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
