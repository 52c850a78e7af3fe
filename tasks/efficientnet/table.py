"""Print parameters and multiply-adds of EfficientNet-B0..B7 (and of any phi) against the paper.

    python -m tasks.efficientnet.table                       # B0-B7 vs the paper's Table 2
    python -m tasks.efficientnet.table --phi 1 2 3 --json    # plus compound-scaled phi = 1, 2, 3
    python -m tasks.efficientnet.table --network resnet50 --phi 1 --no-family --json out.json

B0-B7 use the paper's published (width, depth, resolution); a ``--phi`` row uses the scaling rule:
depth alpha^phi, width beta^phi, resolution gamma^phi times ``--base-resolution``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from core.io import atomic_write_json
from tasks.efficientnet.complexity import measure_backbone
from tasks.efficientnet.scaling import EFFICIENTNET_FAMILY, CompoundScaling

NETWORKS = ("efficientnet", "mobilenetv2", "resnet50")


def family_rows() -> list[dict]:
    """One row per B0-B7 with measured and published params / multiply-adds and the deviations."""
    rows = []
    for name, s in EFFICIENTNET_FAMILY.items():
        c = measure_backbone(
            "compound_scaled_efficientnet",
            s.resolution,
            width_multiplier=s.width,
            depth_multiplier=s.depth,
        )
        rows.append(
            {
                "model": f"efficientnet_{name}",
                "width": s.width,
                "depth": s.depth,
                "resolution": s.resolution,
                "dropout": s.dropout,
                "params_m": c.params_m,
                "gmacs": c.gmacs,
                "paper_params_m": s.paper_params_m,
                "paper_gmacs": s.paper_gmacs,
                "params_dev": c.params_m / s.paper_params_m - 1.0,
                "gmacs_dev": c.gmacs / s.paper_gmacs - 1.0,
            }
        )
    return rows


def phi_rows(
    phis: Sequence[float],
    network: str = "efficientnet",
    alpha: float = 1.2,
    beta: float = 1.1,
    gamma: float = 1.15,
    base_resolution: int = 224,
) -> list[dict]:
    """One row per phi of ``network`` scaled by the compound rule."""
    rows = []
    for phi in phis:
        rule = CompoundScaling(phi=phi, alpha=alpha, beta=beta, gamma=gamma)
        resolution = rule.resolution(base_resolution)
        c = measure_backbone(f"compound_scaled_{network}", resolution, phi=phi, alpha=alpha, beta=beta)
        rows.append(
            {
                "model": f"{network}_phi{phi:g}",
                "width": rule.width_multiplier,
                "depth": rule.depth_multiplier,
                "resolution": resolution,
                "params_m": c.params_m,
                "gmacs": c.gmacs,
            }
        )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table; paper columns are blank for rows the paper does not list."""
    head = f"{'model':<22}{'width':>7}{'depth':>7}{'res':>6}{'params(M)':>11}{'paper':>8}{'dev':>8}"
    head += f"{'MACs(B)':>10}{'paper':>8}{'dev':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        line = f"{r['model']:<22}{r['width']:>7.3f}{r['depth']:>7.3f}{r['resolution']:>6d}"
        line += f"{r['params_m']:>11.2f}"
        line += f"{r['paper_params_m']:>8.1f}{r['params_dev']:>+8.1%}" if "paper_params_m" in r else " " * 16
        line += f"{r['gmacs']:>10.3f}"
        line += f"{r['paper_gmacs']:>8.2f}{r['gmacs_dev']:>+8.1%}" if "paper_gmacs" in r else ""
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--phi", type=float, nargs="*", default=[], help="compound coefficients to add")
    parser.add_argument("--network", choices=NETWORKS, default="efficientnet", help="baseline for --phi rows")
    parser.add_argument("--alpha", type=float, default=1.2)
    parser.add_argument("--beta", type=float, default=1.1)
    parser.add_argument("--gamma", type=float, default=1.15)
    parser.add_argument("--base-resolution", type=int, default=224)
    parser.add_argument("--no-family", action="store_true", help="leave out the B0-B7 rows")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also write the rows as JSON to PATH (stdout when PATH is omitted)",
    )
    args = parser.parse_args(argv)

    rows = [] if args.no_family else family_rows()
    rows += phi_rows(args.phi, args.network, args.alpha, args.beta, args.gamma, args.base_resolution)
    print(format_table(rows))
    if args.json == "-":
        print(json.dumps(rows, indent=2))
    elif args.json:
        atomic_write_json(args.json, rows)
        print(f"wrote {args.json}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
