"""Which network the node (and the demo) runs: a checkpoint, the shipped model, or untrained.

No rclpy here: the demo's offline mode uses it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pmt_perception.checkpoint import load_model
from pmt_perception.config import load_model_config, share_dir
from pmt_perception.network import PMTNet, build_model

__all__ = ["LoadedModel", "shipped_checkpoint", "load_network"]


@dataclass
class LoadedModel:
    model: PMTNet            # on the CPU, eval mode
    class_names: list[str] | None
    palette: object | None
    description: str         # for logs: where the weights came from
    trained: bool


def shipped_checkpoint() -> Path | None:
    """The first models/*.pt of the installation (sorted by name), or None."""
    models = share_dir() / "models"
    found = sorted(models.glob("*.pt")) if models.is_dir() else []
    return found[0] if found else None


def load_network(checkpoint: str, *, untrained_variant: str, untrained_seed: int) -> LoadedModel:
    """``checkpoint`` if given (errors propagate: an explicit path must exist), else the shipped
    model, else a freshly built ``untrained_variant`` with random weights from the seed."""
    path = Path(checkpoint) if checkpoint else shipped_checkpoint()
    if path is not None:
        model, payload = load_model(path)
        return LoadedModel(model=model, class_names=payload.get("class_names"),
                           palette=payload.get("palette"), description=f"checkpoint {path}",
                           trained=True)
    torch.manual_seed(int(untrained_seed))
    model = build_model(load_model_config(untrained_variant)).eval()
    return LoadedModel(
        model=model, class_names=None, palette=None, trained=False,
        description=(f"UNTRAINED '{untrained_variant}' network (random weights, seed "
                     f"{untrained_seed}): no checkpoint given and none in {share_dir() / 'models'}"))
