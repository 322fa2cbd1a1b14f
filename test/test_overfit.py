"""The network can learn: its total loss falls on one tiny stereo sample within bounded steps."""
import torch

from pmt_perception.config import load_loss_config, load_model_config
from pmt_perception.losses import PMTLoss
from pmt_perception.network import build_model


def test_overfits_one_tiny_stereo_sample():
    torch.manual_seed(0)
    config = load_model_config("paper", num_classes=3, backbone="resnet18",
                               spp_f1_windows=(8, 4), spp_f2_windows=(4, 2))
    model = build_model(config).train()
    criterion = PMTLoss(load_loss_config("paper"))
    # A scene a network can fit: left half class 0 at 4 px disparity, right half class 1 at 8 px,
    # a band of class 2; the right view is the left shifted by the disparity.
    h, w = 64, 96
    seg = torch.zeros(1, h, w, dtype=torch.long)
    seg[:, :, w // 2:] = 1
    seg[:, 20:30, :] = 2
    disparity = torch.where(seg == 1, 8.0, 4.0).float()
    left = torch.rand(1, 3, h, w)
    right = torch.stack([torch.roll(left[0, :, y], -int(disparity[0, y, 0]), dims=-1)
                         for y in range(h)], dim=1).unsqueeze(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        total, _terms = criterion(model(left, right), seg=seg, disparity=disparity)
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < 0.35 * losses[0], losses
