"""Losses: the paper's weighted CE, reductions, Dice, BCE, Dice + CE."""

from __future__ import annotations

import math

import pytest
import torch

from unetseg.errors import ConfigError
from unetseg.losses import (
    LossConfig,
    binary_cross_entropy,
    build_loss,
    class_skeletons,
    skeleton_recall_loss,
    soft_dice_loss,
    weighted_cross_entropy,
)


def _batch(seed=0, n=2, c=2, h=6, w=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    target = torch.randint(0, c, (n, h, w), generator=g)
    weight = torch.rand(n, h, w, generator=g) * 10 + 1
    mask = torch.rand(n, h, w, generator=g) > 0.3
    return logits, target, weight, mask


def test_ce_matches_hand_formula():
    logits, target, weight, mask = _batch()
    logp = torch.log_softmax(logits, 1).gather(1, target[:, None])[:, 0]
    manual_sum = -(logp * weight * mask).sum() / logits.shape[0]
    got = weighted_cross_entropy(logits, target, weight, mask, reduction="sum")
    assert torch.allclose(got, manual_sum, atol=1e-5)
    got_mean = weighted_cross_entropy(logits, target, weight, mask, reduction="mean")
    assert torch.allclose(got_mean, manual_sum * logits.shape[0] / mask.sum(), atol=1e-5)
    got_w = weighted_cross_entropy(logits, target, weight, mask, reduction="weight")
    assert torch.allclose(got_w, manual_sum * logits.shape[0] / (weight * mask).sum(), atol=1e-5)


def test_masked_pixels_do_not_matter_even_with_invalid_labels():
    logits, target, weight, mask = _batch(1)
    target2 = target.clone()
    target2[~mask] = 255  # an "ignore" value outside the classes
    logits2 = logits.clone()
    logits2[:, :, ~mask[0]] = 0  # change only ignored pixels (in image 0)
    a = weighted_cross_entropy(logits, target, weight, mask)
    b = weighted_cross_entropy(logits2, torch.where(mask, target2, target2 * 0), weight, mask)
    assert torch.allclose(a, weighted_cross_entropy(logits, target2, weight, mask))
    assert torch.isfinite(b)


def test_gradient_of_sum_is_pixels_times_mean():
    logits, target, _, _ = _batch(2, n=1)
    x1 = logits.clone().requires_grad_()
    x2 = logits.clone().requires_grad_()
    weighted_cross_entropy(x1, target, reduction="sum").backward()
    weighted_cross_entropy(x2, target, reduction="mean").backward()
    assert torch.allclose(x1.grad, x2.grad * target.numel(), atol=1e-5)


def test_weight_map_scales_pixels():
    logits, target, _, _ = _batch(3)
    w = torch.ones_like(target, dtype=torch.float32)
    w[0, 0, 0] = 10.0
    base = weighted_cross_entropy(logits, target, torch.ones_like(w), reduction="sum")
    weighted = weighted_cross_entropy(logits, target, w, reduction="sum")
    pix = torch.nn.functional.cross_entropy(logits, target, reduction="none")[0, 0, 0]
    assert torch.allclose(weighted - base, 9 * pix / 2, atol=1e-5)


def test_bce_two_channels_equals_softmax_ce():
    logits, target, weight, mask = _batch(4)
    a = binary_cross_entropy(logits, target, weight, mask)
    b = weighted_cross_entropy(logits, target, weight, mask)
    assert torch.allclose(a, b, atol=1e-5)


def test_dice_perfect_and_worst():
    target = torch.tensor([[[0, 1, 1], [0, 0, 1]]])
    good = torch.stack([(target == 0), (target == 1)], 1).float() * 50 - 25
    assert soft_dice_loss(good, target, smooth=0).item() < 1e-6
    assert soft_dice_loss(-good, target, smooth=0).item() > 0.999
    one = good[:, 1:] - good[:, :1]
    assert soft_dice_loss(one, target, smooth=0).item() < 1e-6


def test_dice_ignores_masked_pixels():
    target = torch.tensor([[[0, 1, 1, 0]]])
    logits = torch.stack([(target == 0), (target == 1)], 1).float() * 50 - 25
    logits[0, :, 0, 0] = torch.tensor([-25.0, 25.0])  # wrong at pixel 0
    mask = torch.tensor([[[False, True, True, True]]])
    assert soft_dice_loss(logits, target, mask, smooth=0).item() < 1e-6
    assert soft_dice_loss(logits, target, smooth=0).item() > 0.1


def test_build_loss_and_errors():
    logits, target, weight, mask = _batch(5)
    batch = {"target": target, "weight": weight, "mask": mask}
    ce = build_loss(LossConfig(name="ce"))(logits, batch)
    ce_nw = build_loss(LossConfig(name="ce", use_weight_map=False))(logits, batch)
    assert not torch.allclose(ce, ce_nw)
    dce = build_loss(LossConfig(name="dice_ce", dice_weight=2.0))(logits, batch)
    dice = build_loss(LossConfig(name="dice"))(logits, batch)
    assert torch.allclose(dce, ce + 2 * dice, atol=1e-5)
    with pytest.raises(ConfigError, match="loss.reduction"):
        build_loss(LossConfig(reduction="avg"))  # type: ignore[arg-type]


def test_ce_with_uniform_logits_is_log_c():
    target = torch.zeros(1, 3, 3, dtype=torch.long)
    assert math.isclose(float(weighted_cross_entropy(torch.zeros(1, 3, 3, 3), target)), math.log(3), rel_tol=1e-6)


def test_loss_is_fp32_under_bf16_autocast():
    logits, target, weight, mask = _batch(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = weighted_cross_entropy(logits.bfloat16(), target, weight, mask)
    assert out.dtype == torch.float32


def _membrane_batch():
    target = torch.ones(1, 16, 16, dtype=torch.long)
    target[0, 7:9, :] = 0  # a horizontal membrane (class 0) two pixels thick
    sure = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 20 - 10
    return target, sure


def test_skeleton_recall_counts_the_share_of_the_membrane_line_that_is_broken():
    target, sure = _membrane_batch()
    gap = sure.clone()
    gap[0, :, 7:9, 8] = torch.tensor([-10.0, 10.0])[:, None]  # the membrane is broken in one of 16 columns
    rise = float(skeleton_recall_loss(gap, target, classes=(0,), smooth=0) - skeleton_recall_loss(sure, target, classes=(0,), smooth=0))
    assert math.isclose(rise, 1 / 16, abs_tol=0.01)  # whatever the size of the rest of the image
    wide = torch.cat([gap, sure], -1), torch.cat([target, torch.ones_like(target)], -1)  # twice the cell area
    assert math.isclose(float(skeleton_recall_loss(*wide, classes=(0,), smooth=0)), rise, abs_tol=0.01)
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, :, 4:12] = False  # the gap is in ignored pixels: no penalty there
    assert float(skeleton_recall_loss(gap, target, mask, classes=(0,))) < 1e-3
    logits = torch.zeros_like(sure, requires_grad=True)
    skeleton_recall_loss(logits, target, classes=(0,)).backward()
    assert logits.grad[0, 0, 7:9].abs().sum() > 0 and logits.grad[0, 0, :5].abs().sum() == 0  # only skeleton pixels pull


def test_cell_skeleton_recall_sees_a_false_membrane_across_a_cell():
    target, sure = _membrane_batch()  # two cells, rows 0-6 and 9-15, split by the membrane
    split = sure.clone()
    split[0, :, 2:4, :] = torch.tensor([10.0, -10.0])[:, None, None]  # a false membrane across the upper cell
    membrane_only = float(skeleton_recall_loss(split, target, classes=(0,), smooth=0))
    assert membrane_only < 1e-6  # the membrane's own skeleton is still covered: the term is blind to the split
    both = float(skeleton_recall_loss(split, target, classes=(0, 1), smooth=0))
    assert both > 0.01  # the cell's centre line is cut where the false membrane crosses it
    thick = sure.clone()
    thick[0, :, 6, :] = torch.tensor([10.0, -10.0])[:, None]  # the true membrane one row thicker, at its edge
    assert float(skeleton_recall_loss(thick, target, classes=(0, 1), smooth=0)) < both / 4  # the edge is off the centre line


def test_skeleton_term_is_added_by_build_loss_and_checked():
    target, sure = _membrane_batch()
    batch = {"target": target}
    logits = torch.zeros_like(sure)
    plain = float(build_loss(LossConfig(name="ce"))(logits, batch))
    both = float(build_loss(LossConfig(name="ce", skeleton_weight=2.0, skeleton_classes=[0]))(logits, batch))
    assert math.isclose(both, plain + 2.0 * float(skeleton_recall_loss(logits, target, classes=(0,))), rel_tol=1e-6)
    with pytest.raises(ConfigError, match="skeleton_classes"):
        build_loss(LossConfig(skeleton_weight=1.0))
    with pytest.raises(ValueError, match="2D"):
        skeleton_recall_loss(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long), classes=(0,))


def test_skeletons_the_tiles_carry_give_the_loss_computed_from_the_target():
    target, sure = _membrane_batch()
    logits = sure.clone()
    logits[0, :, 2:4, 3:9] = torch.tensor([10.0, -10.0])[:, None, None]  # a false membrane part-way across the upper cell
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, 12:, :] = False
    given = torch.from_numpy(class_skeletons(target[0].numpy(), mask[0].numpy(), classes=(0, 1)))[None]
    inside = float(skeleton_recall_loss(logits, target, mask, classes=(0, 1)))
    assert inside > 0.01 and float(skeleton_recall_loss(logits, target, mask, classes=(0, 1), skeletons=given)) == inside
    batch = {"target": target, "mask": mask, "skeleton": given}
    loss = build_loss(LossConfig(name="ce", skeleton_weight=1.0, skeleton_classes=[0, 1]))
    assert float(loss(logits, batch)) == float(loss(logits, {"target": target, "mask": mask}))
    empty = torch.zeros_like(given)  # the batch's skeletons are what the term recalls: none, no loss
    assert float(skeleton_recall_loss(logits, target, mask, classes=(0, 1), skeletons=empty)) == 0.0
    with pytest.raises(ValueError, match="expected"):
        skeleton_recall_loss(logits, target, mask, classes=(0,), skeletons=given)
