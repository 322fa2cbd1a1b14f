"""pmt-info: a variant's parameter counts and GFLOPs at an input size, without running it.

FLOPs are counted by torch's FlopCounterMode on the `meta` device: shapes propagate, nothing
is computed, so even 1024x2048 takes well under a second.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from .cli import parse_size
from .config import load_model_config, to_plain
from .network import build_model, count_parameters


def count_gflops(config, size: tuple[int, int], *, batch: int = 1) -> dict[str, float]:
    """Forward GFLOP (2 x multiply-accumulates of convs and matmuls) in total and per part."""
    with torch.device("meta"):
        model = build_model(config).eval()
        image = torch.zeros(batch, 3, *size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image, image)
    parts = {name.split(".", 1)[1]: sum(ops.values()) / 1e9
             for name, ops in counter.get_flop_counts().items() if name.count(".") == 1}
    return {"total": counter.get_total_flops() / 1e9, **parts}


def describe(variant: str, size: tuple[int, int], num_classes: int | None = None) -> dict:
    overrides = {"num_classes": num_classes} if num_classes else {}
    config = load_model_config(variant, **overrides)
    with torch.device("meta"):
        model = build_model(config)
    params = count_parameters(model)
    # Unique trainable parameters of each top-level part (backbone, spp_*, the three branches).
    params_per_part = {name: sum(p.numel() for p in part.parameters() if p.requires_grad)
                       for name, part in model.named_children()}
    return {
        "variant": config.variant,
        "backbone": config.backbone,
        "num_classes": config.num_classes,
        "input_size": list(size),
        "min_input_size": config.min_input_size,
        "parameters": params,
        "parameters_per_part": params_per_part,
        "gflops": count_gflops(config, size),
        "config": to_plain(config),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pmt-info", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="paper",
                        help="variant name (config/model/NAME.yaml) or a YAML path (default: paper)")
    parser.add_argument("--size", type=parse_size, default=(480, 720), help="input HxW (default 480x720)")
    parser.add_argument("--num-classes", type=int, default=None, help="override the class count")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        info = describe(args.variant, args.size, args.num_classes)
    except ValueError as error:
        parser.error(str(error))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    p, g = info["parameters"], info["gflops"]
    print(f"variant {info['variant']} ({info['backbone']}, {info['num_classes']} classes)")
    print(f"parameters: {p['unique'] / 1e6:.2f}M unique, {p['siamese_counted'] / 1e6:.2f}M "
          f"Siamese-counted (backbone+SPP {p['siamese_modules'] / 1e6:.2f}M counted twice)")
    print(f"GFLOP at {args.size[0]}x{args.size[1]}: {g['total']:.1f}   (per part: GFLOP, parameters)")
    for part, value in g.items():
        if part != "total":
            print(f"  {part:<22} {value:8.1f} {info['parameters_per_part'].get(part, 0) / 1e6:8.2f}M")
    print(f"smallest input: {info['min_input_size']}x{info['min_input_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
