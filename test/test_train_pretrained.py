"""The paper's recipe asks for ImageNet weights (`model_overrides: {pretrained: true}` in
config/train/paper.yaml). build_model never reads that flag (a checkpoint load must download
nothing), so the trainer, its one caller that starts training, has to pass it on."""
from __future__ import annotations

import pytest
import torch
import torchvision

from pmt_perception.training.components import build_network
from pmt_perception.training.distributed import setup_distributed
from pmt_perception.training.options import resolve_settings

MARK = 0.125   # no trained or random conv weight is constant: this one came from the cache


def planted_stem(network: torch.nn.Module) -> bool:
    return any(p.shape == (64, 3, 7, 7) and bool(torch.all(p == MARK))
               for p in network.parameters())


@pytest.mark.parametrize("pretrained", [True, False])
def test_the_recipes_pretrained_flag_reaches_the_backbone(tmp_path, monkeypatch, pretrained):
    # torchvision's cache stands in for the download (this machine has no network).
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    imagenet = torchvision.models.resnet18()
    with torch.no_grad():
        imagenet.conv1.weight.fill_(MARK)
    torch.save(imagenet.state_dict(), cache / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    flag = "true" if pretrained else "false"
    config = resolve_settings(["--config", "synthetic_cpu", "--channels-last", "false",
                               "--model-overrides", f"{{pretrained: {flag}}}"]).config
    network = build_network(config, 8, setup_distributed("cpu"))
    assert planted_stem(network) == pretrained
