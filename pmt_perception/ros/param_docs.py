"""docs/node.md's parameter tables, written from the parameter specs and the YAML defaults.

    python -m pmt_perception.ros.param_docs            # rewrite the tables in docs/node.md
    python -m pmt_perception.ros.param_docs --check    # exit 1 when docs/node.md is not current

The meaning, limits and "applies" column come from the specs (ros/params.py,
ros/stereo_source.py), the defaults from config/*.yaml: the page is never edited by hand
between its ``<!-- parameters:NAME -->`` and ``<!-- end parameters -->`` markers.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pmt_perception.config import config_dir, share_dir
from pmt_perception.ros.params import PARAMETER_SPECS, ParameterSpec, load_defaults
from pmt_perception.ros.stereo_source import SOURCE_PARAMETER_SPECS

__all__ = ["TABLES", "markdown_table", "render", "main"]

# marker name -> (specs, parameter file, whether the table has an "applies" column)
TABLES = {
    "stereo_seg_node": (PARAMETER_SPECS, "stereo_seg.yaml", True),
    "stereo_source": (SOURCE_PARAMETER_SPECS, "stereo_source.yaml", False),
}
_BLOCK = re.compile(r"(<!-- parameters:(\w+) -->\n)(.*?)(<!-- end parameters -->)", re.S)


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_default(v) for v in value) + "]"
    return repr(value)


def _meaning(spec: ParameterSpec) -> str:
    text = spec.description.replace("<", "&lt;").replace(">", "&gt;")
    if spec.minimum is not None and spec.maximum is not None:
        text += f" Range {spec.minimum:g}..{spec.maximum:g}."
    if spec.choices:
        text += " One of: " + ", ".join(f"`{choice}`" for choice in spec.choices) + "."
    return text


def markdown_table(specs: dict[str, ParameterSpec], defaults: dict[str, Any], *,
                   applies: bool) -> str:
    header = ["parameter", "default", *(["applies"] if applies else []), "meaning"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, spec in specs.items():
        cells = [f"`{name}`", _default(defaults[name]), *([spec.applies] if applies else []),
                 _meaning(spec)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` (docs/node.md) with every marked table regenerated."""
    def table(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise ValueError(f"unknown parameter table {name!r}; known: {list(TABLES)}")
        specs, file_name, applies = TABLES[name]
        defaults = load_defaults(config_dir() / file_name, specs)
        return match.group(1) + markdown_table(specs, defaults, applies=applies) + match.group(4)

    rendered, count = _BLOCK.subn(table, text)
    if count != len(TABLES):
        raise ValueError(f"expected {len(TABLES)} marked parameter tables, found {count}")
    return rendered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pmt_perception.ros.param_docs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=share_dir() / "docs" / "node.md")
    parser.add_argument("--check", action="store_true",
                        help="only compare; exit 1 when the file is not current")
    args = parser.parse_args(argv)
    current = args.path.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{args.path} is not current: run python -m pmt_perception.ros.param_docs",
                  file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        args.path.write_text(wanted, encoding="utf-8")
        print(f"wrote {args.path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
