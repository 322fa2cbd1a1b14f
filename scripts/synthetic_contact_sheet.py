"""Make docs/synthetic_contact_sheet.jpg: left | right | disparity | labels of a few synthetic
scenes from the shipped config (config/data/synthetic.yaml), with photo textures.

    .venv/bin/python -m pmt_perception.data.synthetic.fetch_textures   # once: the photo cache
    .venv/bin/python scripts/synthetic_contact_sheet.py [--rows 5] [--out docs/synthetic_contact_sheet.jpg]

Scenes are (seed 0, split "test", index 0..rows-1) at 240x360 unless --indices says otherwise;
without a photo cache it stops (the sheet in the README shows photo-textured scenes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from pmt_perception.cli import parse_size
from pmt_perception.data.synthetic import PALETTE, generate_pair, load_generator_settings, sample_seed
from pmt_perception.data.synthetic.photo_cache import open_library
from pmt_perception.visualize import colorize_disparity, colorize_labels, contact_sheet

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "synthetic_contact_sheet.jpg")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--indices", type=int, nargs="*", default=None, help="test-split indices shown")
    parser.add_argument("--size", type=parse_size, default=(240, 360), help="HxW of the pairs")
    parser.add_argument("--tile-width", type=int, default=300)
    args = parser.parse_args(argv)
    settings = load_generator_settings("synthetic")
    if open_library(settings.textures.photo_dir) is None:
        raise SystemExit("no photo cache: run `python -m pmt_perception.data.synthetic.fetch_textures` first")
    indices = args.indices if args.indices else list(range(args.rows))
    max_disparity = settings.scene.max_disparity_px * args.size[1] / settings.scene.reference_width
    rows = []
    for index in indices:
        pair = generate_pair(settings, seed=sample_seed(settings.seed, "test", index), size=args.size)
        rows.append([pair.left, pair.right, colorize_disparity(pair.disparity, max_disparity),
                     colorize_labels(pair.labels, PALETTE)])
    sheet = contact_sheet(rows, ["left", "right (own gain/gamma)", f"disparity (0-{max_disparity:.0f} px)",
                                 "labels"], tile_width=args.tile_width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.ascontiguousarray(sheet[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]}, test indices {indices})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
