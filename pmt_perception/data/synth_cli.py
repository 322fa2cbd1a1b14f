"""`pmt-synth`: write synthetic stereo pairs with exact ground truth to a folder.

    pmt-synth --out /tmp/synth --num 100 --size 480x720 --seed 0 [--photo-dir DIR]

The layout is documented in pmt_perception/data/synthetic/dataset.py; the folder also gets a
contact sheet (left | right | disparity | labels) of its first pairs for a person to look at.
Photo textures come from the config's loader.textures.photo_dir (or --photo-dir), filled once by
`pmt-fetch-textures`; without photos there the scenes use procedural textures and a warning says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..cli import parse_size, stops_cleanly
from ..visualize import colorize_disparity, colorize_labels, contact_sheet, write_png_rgb
from .synthetic import PALETTE, SyntheticPair, load_generator_settings, write_folder
from .synthetic.generator import SPLIT_CODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-synth", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--num", type=int, default=16, help="number of pairs")
    parser.add_argument("--size", type=parse_size, default=None,
                        help="HxW, e.g. 480x720 (default: the config's loader.size)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; pair i uses (seed, split, i)")
    parser.add_argument("--split", choices=sorted(SPLIT_CODES), default="train",
                        help="seed stream (train/val/test never share scenes)")
    parser.add_argument("--config", default="synthetic", help="data config name or YAML path")
    parser.add_argument("--photo-dir", default=None,
                        help="photo texture cache (default: the config's loader.textures.photo_dir; "
                             "'none': procedural textures only)")
    parser.add_argument("--sheet-rows", type=int, default=6,
                        help="pairs shown in contact_sheet.png (0: none)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable summary")
    return parser


@stops_cleanly
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num < 1:
        raise SystemExit("pmt-synth: --num must be >= 1")
    settings = load_generator_settings(args.config)
    if args.photo_dir is not None:
        photo_dir = None if args.photo_dir.lower() == "none" else args.photo_dir
        settings = dataclasses.replace(settings, textures=dataclasses.replace(settings.textures,
                                                                              photo_dir=photo_dir))
    size = args.size or tuple(settings.size)
    max_disp = settings.scene.max_disparity_px * size[1] / settings.scene.reference_width
    rows: list[list[np.ndarray]] = []
    disparities: list[np.ndarray] = []

    def on_sample(index: int, pair: SyntheticPair) -> None:
        if index < args.sheet_rows:
            rows.append([pair.left, pair.right, colorize_disparity(pair.disparity, max_disp),
                         colorize_labels(pair.labels, PALETTE)])
        disparities.append(pair.disparity[::4, ::4].ravel())
        if not args.json:
            print(f"\r[pmt-synth] {index + 1}/{args.num}", end="", file=sys.stderr, flush=True)

    start = time.perf_counter()
    description = write_folder(args.out, settings, count=args.num, seed=args.seed, split=args.split,
                               size=size, on_sample=on_sample)
    elapsed = time.perf_counter() - start
    if rows:
        tile_width = min(size[1], 480)
        write_png_rgb(args.out / "contact_sheet.png",
                      contact_sheet(rows, ["left", "right", f"disparity (0-{max_disp:.0f} px)", "labels"],
                                    tile_width=tile_width))
    values = np.concatenate(disparities)
    percentiles = {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                   "max": float(values.max())}
    summary = {"out": str(args.out), "count": args.num, "size": list(size), "seed": args.seed,
               "split": args.split, "seconds": round(elapsed, 3),
               "pairs_per_second": round(args.num / elapsed, 3),
               "disparity_scale": description["disparity_scale"], "disparity_px": percentiles,
               "photo_textures": len(description["photo_textures"])}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"\n[pmt-synth] wrote {args.num} pairs ({size[0]}x{size[1]}) to {args.out} "
              f"in {elapsed:.1f} s ({summary['pairs_per_second']} pairs/s); disparity "
              f"p50 {percentiles['p50']:.1f} p95 {percentiles['p95']:.1f} max {percentiles['max']:.1f} px; "
              f"{summary['photo_textures'] or 'no'} photos as textures",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
