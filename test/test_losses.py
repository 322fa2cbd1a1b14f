"""Losses of pmt_perception.losses against hand-worked values and independent formulas."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pmt_perception.config import load_loss_config
from pmt_perception.losses import PMTLoss, cross_entropy, lovasz_softmax, masked_l1

IGNORE = 255


# --------------------------------------------------------------------------- Lovasz-softmax
def _hand_example():
    """One 2x2 image, 2 classes. Pixels in row-major order p0..p3:

        P(class 1) = [0.2, 0.6, 0.9, 0.5]   P(class 0) = 1 - P(class 1) = [0.8, 0.4, 0.1, 0.5]
        labels     = [0,   0,   1,   255]   -> p3 is ignored, 3 valid pixels
    """
    p1 = torch.tensor([[0.2, 0.6], [0.9, 0.5]], dtype=torch.float64)
    probabilities = torch.stack([1 - p1, p1]).unsqueeze(0).requires_grad_(True)  # (1, 2, 2, 2)
    labels = torch.tensor([[[0, 0], [1, IGNORE]]])
    return probabilities, labels


def test_lovasz_matches_hand_computed_value_and_gradient():
    # Class 0: fg = [1, 1, 0], errors |fg - P0| = [0.2, 0.6, 0.1].
    #   sorted by error: 0.6 (p1, fg 1), 0.2 (p0, fg 1), 0.1 (p2, fg 0); |gt| = 2
    #   intersection = 2 - cumsum(fg)   = [1, 0, 0]
    #   union        = 2 + cumsum(1-fg) = [2, 2, 3]
    #   Jaccard loss = 1 - inter/union  = [1/2, 1, 1]  -> grad (differences) = [1/2, 1/2, 0]
    #   loss_0 = 0.6*1/2 + 0.2*1/2 + 0.1*0 = 0.4
    # Class 1: fg = [0, 0, 1], errors |fg - P1| = [0.2, 0.6, 0.1].
    #   sorted: 0.6 (p1, fg 0), 0.2 (p0, fg 0), 0.1 (p2, fg 1); |gt| = 1
    #   intersection = 1 - cumsum(fg)   = [1, 1, 0]
    #   union        = 1 + cumsum(1-fg) = [2, 3, 3]
    #   Jaccard loss = [1/2, 2/3, 1]    -> grad = [1/2, 1/6, 1/3]
    #   loss_1 = 0.6*1/2 + 0.2*1/6 + 0.1*1/3 = 0.3 + 1/30 + 1/30 = 11/30
    # Both classes present: loss = (0.4 + 11/30) / 2 = 23/60.
    probabilities, labels = _hand_example()
    loss = lovasz_softmax(probabilities, labels, ignore_index=IGNORE)
    assert loss.item() == pytest.approx(23 / 60, abs=1e-12)

    # d loss / d P_c(pixel) = (1/2) * sign(P - fg) * grad at the pixel's sorted position:
    #   class 0: p0 (fg 1, pos 2) -1/2*1/2 = -1/4; p1 (fg 1, pos 1) -1/4; p2 (fg 0, pos 3) 0
    #   class 1: p0 (fg 0, pos 2) +1/2*1/6 = 1/12; p1 (pos 1) +1/4; p2 (fg 1, pos 3) -1/6
    #   ignored p3: 0 in both classes.
    loss.backward()
    expected = torch.tensor([[[-1 / 4, -1 / 4], [0.0, 0.0]],
                             [[1 / 12, 1 / 4], [-1 / 6, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(probabilities.grad[0], expected)


def _jaccard_loss_of_crisp(prediction: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Mean over GT-present classes of 1 - IoU, counted directly (no Lovasz machinery)."""
    losses = []
    for c in range(num_classes):
        gt, pred = labels == c, prediction == c
        if gt.any():
            losses.append(1.0 - (gt & pred).sum() / (gt | pred).sum())
    return float(np.mean(losses))


def test_lovasz_of_one_hot_prediction_equals_jaccard_loss():
    # On {0,1} error vectors the Lovasz extension equals the set function it extends: 1 - IoU.
    generator = torch.Generator().manual_seed(0)
    num_classes = 4
    labels = torch.randint(0, num_classes, (2, 5, 6), generator=generator)
    labels[0, 0, :3] = IGNORE
    prediction = torch.randint(0, num_classes, (2, 5, 6), generator=generator)
    probabilities = F.one_hot(prediction, num_classes).permute(0, 3, 1, 2).double()
    valid = (labels != IGNORE).numpy()

    batch_loss = lovasz_softmax(probabilities, labels, ignore_index=IGNORE)
    expected = _jaccard_loss_of_crisp(prediction.numpy()[valid], labels.numpy()[valid],
                                      num_classes)
    assert batch_loss.item() == pytest.approx(expected, abs=1e-12)

    per_image = lovasz_softmax(probabilities, labels, ignore_index=IGNORE, per_image=True)
    expected_per_image = np.mean([
        _jaccard_loss_of_crisp(prediction[b].numpy()[valid[b]], labels[b].numpy()[valid[b]],
                               num_classes) for b in range(2)])
    assert per_image.item() == pytest.approx(expected_per_image, abs=1e-12)


def test_lovasz_is_zero_for_perfect_prediction_and_one_for_all_wrong():
    labels = torch.tensor([[[0, 1], [1, 1]]])
    perfect = F.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    assert lovasz_softmax(perfect, labels, ignore_index=IGNORE).item() == pytest.approx(0.0)
    assert lovasz_softmax(1 - perfect, labels, ignore_index=IGNORE).item() == pytest.approx(1.0)


def test_lovasz_without_valid_pixels_is_zero_with_gradient():
    probabilities = torch.full((2, 3, 2, 2), 1 / 3, requires_grad=True)
    labels = torch.full((2, 2, 2), IGNORE)
    for per_image in (False, True):
        loss = lovasz_softmax(probabilities, labels, ignore_index=IGNORE, per_image=per_image)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(probabilities.grad, torch.zeros_like(probabilities))


def test_lovasz_rejects_labels_out_of_range_and_bad_shapes():
    probabilities = torch.full((1, 3, 2, 2), 1 / 3)
    with pytest.raises(ValueError, match="label"):
        lovasz_softmax(probabilities, torch.tensor([[[0, 1], [7, 2]]]), ignore_index=IGNORE)
    with pytest.raises(ValueError, match="do not match"):
        lovasz_softmax(probabilities, torch.zeros(1, 3, 2, dtype=torch.int64), ignore_index=IGNORE)


# --------------------------------------------------------------------------- cross-entropy, L1
def test_cross_entropy_averages_over_labelled_pixels_only():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 5.0]]]])  # (1, 2, 1, 2)
    labels = torch.tensor([[[0, IGNORE]]])
    # Only pixel 0 counts: -log softmax([2, 0])[0] = log(1 + e^-2).
    expected = math.log(1 + math.exp(-2))
    assert cross_entropy(logits, labels, ignore_index=IGNORE).item() == pytest.approx(expected)


def test_cross_entropy_of_fully_ignored_batch_is_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = cross_entropy(logits, torch.full((1, 2, 2), IGNORE), ignore_index=IGNORE)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all()


def test_masked_l1_uses_valid_pixels_only():
    prediction = torch.tensor([[[[1.0, 5.0], [2.0, 9.0]]]], requires_grad=True)  # (1, 1, 2, 2)
    target = torch.tensor([[[3.0, 0.0], [2.5, math.inf]]])
    # Valid: (0,0) |1-3| = 2 and (1,0) |2-2.5| = 0.5; 0 and inf are "no ground truth".
    loss = masked_l1(prediction, target)
    assert loss.item() == pytest.approx(1.25)
    loss.backward()
    # d/dpred of mean |pred - gt| over 2 pixels: sign / 2 on valid pixels, 0 elsewhere.
    torch.testing.assert_close(prediction.grad, torch.tensor([[[[-0.5, 0.0], [-0.5, 0.0]]]]))


def test_masked_l1_without_ground_truth_is_zero_with_finite_gradient():
    prediction = torch.randn(2, 1, 3, 3, requires_grad=True)
    target = torch.tensor([0.0, math.nan, -1.0]).repeat(2, 3, 1)
    loss = masked_l1(prediction, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(prediction.grad, torch.zeros_like(prediction))


def test_masked_l1_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="does not match"):
        masked_l1(torch.zeros(1, 1, 4, 4), torch.ones(1, 4, 5))


def test_class_weighted_cross_entropy_is_torchs_weighted_mean_and_keeps_zero_for_no_labels():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 5, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 5), generator=generator)
    labels[:, 0] = IGNORE
    weights = torch.tensor([0.5, 1.0, 4.0])
    expected = F.cross_entropy(logits, labels, weight=weights, ignore_index=IGNORE)
    assert cross_entropy(logits, labels, ignore_index=IGNORE, class_weights=weights).item() \
        == pytest.approx(expected.item(), rel=1e-6)
    # A heavier class pulls the mean towards its pixels' losses: unweighted differs.
    assert cross_entropy(logits, labels, ignore_index=IGNORE).item() \
        != pytest.approx(expected.item(), rel=1e-3)
    empty = cross_entropy(logits, torch.full_like(labels, IGNORE), ignore_index=IGNORE,
                          class_weights=weights)
    assert empty.item() == 0.0
    with pytest.raises(ValueError, match="2 class weights for 3 classes"):
        cross_entropy(logits, labels, ignore_index=IGNORE, class_weights=weights[:2])


def test_loss_config_class_weights_reach_both_cross_entropies_and_bad_ones_are_refused():
    output, seg, disparity = _batch()
    weights = (1.0, 2.0, 3.0)
    _, terms = PMTLoss(load_loss_config("paper", class_weights=list(weights)))(
        output, seg=seg, disparity=disparity)
    for name, logits in (("coarse_ce", output.coarse_logits),
                         ("refined_ce", output.refined_logits)):
        expected = F.cross_entropy(logits, seg, weight=torch.tensor(weights), ignore_index=IGNORE)
        assert terms[name].item() == pytest.approx(expected.item(), rel=1e-6)
    for bad in ([], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="class_weights"):
            load_loss_config("paper", class_weights=bad)


# --------------------------------------------------------------------------- PMTLoss
def _batch(seed: int = 0, num_classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    output = SimpleNamespace(
        coarse_logits=torch.randn(2, num_classes, 4, 5, generator=generator, requires_grad=True),
        disparity=(10 * torch.rand(2, 1, 4, 5, generator=generator)).requires_grad_(True),
        refined_logits=torch.randn(2, num_classes, 4, 5, generator=generator, requires_grad=True))
    seg = torch.randint(0, num_classes, (2, 4, 5), generator=generator)
    seg[:, 0] = IGNORE
    disparity = 10 * torch.rand(2, 4, 5, generator=generator)
    disparity[:, :, 0] = 0.0
    return output, seg, disparity


def _independent_terms(output, seg, disparity):
    return {
        "disparity_l1": masked_l1(output.disparity, disparity),
        "coarse_ce": F.cross_entropy(output.coarse_logits, seg, ignore_index=IGNORE),
        "refined_ce": F.cross_entropy(output.refined_logits, seg, ignore_index=IGNORE),
        "refined_lovasz": lovasz_softmax(output.refined_logits.softmax(1), seg,
                                         ignore_index=IGNORE),
    }


def test_paper_loss_is_the_weighted_sum_of_its_terms():
    output, seg, disparity = _batch()
    expected = _independent_terms(output, seg, disparity)
    config = load_loss_config("paper", refined_lovasz=2.0, coarse_ce=0.5)
    total, terms = PMTLoss(config)(output, seg=seg, disparity=disparity)
    weighted = (config.disparity_l1 * expected["disparity_l1"] + 0.5 * expected["coarse_ce"]
                + config.refined_ce * expected["refined_ce"] + 2.0 * expected["refined_lovasz"])
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value.item(), rel=1e-6)
        assert not terms[name].requires_grad
    assert terms["total"].item() == pytest.approx(total.item())
    total.backward()
    for tensor in (output.coarse_logits, output.disparity, output.refined_logits):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_zero_weight_terms_are_skipped_and_tuples_are_accepted():
    output, seg, disparity = _batch()
    loss = PMTLoss(load_loss_config("paper", refined_lovasz=0.0))
    as_tuple = (output.coarse_logits, output.disparity, output.refined_logits)
    total, terms = loss(as_tuple, seg=seg, disparity=disparity)
    assert "refined_lovasz" not in terms
    assert total.item() == pytest.approx(
        sum(terms[n].item() for n in ("disparity_l1", "coarse_ce", "refined_ce")), rel=1e-6)
    assert list(loss.parameters()) == []


def test_invalid_weights_and_outputs_are_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        PMTLoss(load_loss_config("paper", coarse_ce=-1.0))
    with pytest.raises(ValueError, match="every loss weight is 0"):
        PMTLoss(load_loss_config("paper", disparity_l1=0.0, coarse_ce=0.0, refined_ce=0.0,
                                 refined_lovasz=0.0))
    output, seg, disparity = _batch()
    with pytest.raises(ValueError, match="coarse_logits"):
        PMTLoss(load_loss_config("paper"))(object(), seg=seg, disparity=disparity)
    with pytest.raises(ValueError, match="do not match"):
        PMTLoss(load_loss_config("paper"))(output, seg=seg[:, :3], disparity=disparity)


def test_uncertainty_weighting_follows_kendall_and_learns_its_log_variances():
    output, seg, disparity = _batch()
    loss = PMTLoss(load_loss_config("paper", uncertainty_weighting=True))
    assert sorted(name for name, _ in loss.named_parameters()) == [
        "log_variances.coarse", "log_variances.disparity", "log_variances.refined"]
    s = {"disparity": 0.3, "coarse": -0.2, "refined": 0.7}
    with torch.no_grad():
        for group, value in s.items():
            loss.log_variances[group].fill_(value)
    terms = _independent_terms(output, seg, disparity)
    refined = terms["refined_ce"] + terms["refined_lovasz"]
    expected = (0.5 * math.exp(-0.3) * terms["disparity_l1"] + 0.5 * 0.3
                + math.exp(0.2) * terms["coarse_ce"] + 0.5 * -0.2
                + math.exp(-0.7) * refined + 0.5 * 0.7)
    total, logged = loss(output, seg=seg, disparity=disparity)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logged["log_variance_refined"].item() == pytest.approx(0.7)

    # d total / d s_d = -0.5 exp(-s_d) L1 + 0.5: the optimizer can learn the weights.
    total.backward()
    grad_disparity = loss.log_variances["disparity"].grad.item()
    assert grad_disparity == pytest.approx(
        -0.5 * math.exp(-0.3) * terms["disparity_l1"].item() + 0.5, rel=1e-5)
