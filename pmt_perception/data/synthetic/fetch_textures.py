"""`pmt-fetch-textures`: copy the photos that ship inside installed packages into the texture
cache the synthetic generator reads (photo_cache.py says which, and which are never used).

    pmt-fetch-textures                      # into loader.textures.photo_dir of config/data/synthetic.yaml
    pmt-fetch-textures --out DIR --source /tmp/sk/skimage/data --exclude-dir ../shared/data/real_stereo

Nothing is downloaded: without scikit-image installed, `pip download --no-deps scikit-image`
and unzip its `skimage/data` somewhere, then pass that folder as --source.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...config import load_yaml, resolve_config_path
from .photo_cache import fetch_textures, package_sources


def _default_out(config: str) -> str | None:
    data = load_yaml(resolve_config_path(config, "data"))
    return data.get("loader", {}).get("textures", {}).get("photo_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pmt-fetch-textures", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=None,
                        help="cache folder (default: loader.textures.photo_dir of --config)")
    parser.add_argument("--config", default="synthetic", help="data config name or YAML path")
    parser.add_argument("--source", type=Path, action="append", default=[],
                        help="extra folder of photos (repeatable), e.g. an unzipped wheel's skimage/data")
    parser.add_argument("--exclude-dir", type=Path, action="append", default=[],
                        help="folder of evaluation images: files with the same content are never used")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or _default_out(args.config)
    if not out:
        raise SystemExit("pmt-fetch-textures: no --out and no loader.textures.photo_dir in the config")
    sources = package_sources()
    for folder in args.source:
        if not folder.is_dir():
            raise SystemExit(f"pmt-fetch-textures: --source {folder} is not a folder")
        folder = folder.resolve()
        sources[f"{folder.parent.name}-{folder.name}"] = folder
    if not sources:
        raise SystemExit("pmt-fetch-textures: no photo sources found. Install one of: "
                         "`pip install scikit-image` (skimage/data), matplotlib (mpl-data/sample_data), "
                         "`apt-get install opencv-doc`; or pass --source DIR (e.g. a wheel from "
                         "`pip download --no-deps scikit-image`, unzipped)")
    entries = fetch_textures(out, sources, exclude_dirs=args.exclude_dir)
    per_package: dict[str, int] = {}
    for entry in entries:
        per_package[entry["package"]] = per_package.get(entry["package"], 0) + 1
    print(f"[pmt-fetch-textures] {len(entries)} photos in {Path(out).expanduser()} "
          f"({', '.join(f'{k}: {v}' for k, v in sorted(per_package.items())) or 'none'}); "
          f"searched {', '.join(str(p) for p in sources.values())}", file=sys.stderr)
    if not any("skimage" in str(folder) for folder in sources.values()):
        print("[pmt-fetch-textures] scikit-image is not installed: `pip install scikit-image` (or "
              "--source an unzipped wheel) adds ~25 photos", file=sys.stderr)
    return 0 if entries else 1


if __name__ == "__main__":
    sys.exit(main())
