"""Instances from probabilities: threshold, components, watershed split, small objects, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from unetseg.errors import ConfigError, InputError
from unetseg.postprocess import (
    as_label_image,
    connected_components,
    fill_small_holes,
    instances_from_probabilities,
    label_dtype,
    relabel_sequential,
    remove_small_edge_objects,
    remove_small_objects,
    threshold,
    watershed_split,
)


def _two_touching_discs(shape=(40, 60), r=10):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    a = (yy - 20) ** 2 + (xx - 20) ** 2 <= r * r
    b = (yy - 20) ** 2 + (xx - 38) ** 2 <= r * r
    return a, b


def test_threshold_and_components():
    p = np.array([[0.9, 0.9, 0.1, 0.8], [0.1, 0.1, 0.1, 0.8], [0.7, 0.1, 0.1, 0.1]])
    mask = threshold(p, 0.5)
    labels = connected_components(mask)
    assert labels.dtype == np.uint16 and labels.max() == 3
    assert connected_components(np.eye(3, dtype=bool), connectivity=2).max() == 1
    assert connected_components(np.eye(3, dtype=bool), connectivity=1).max() == 3
    with pytest.raises(ConfigError):
        threshold(p, 1.5)


def test_distance_watershed_splits_touching_discs():
    a, b = _two_touching_discs()
    mask = a | b
    assert connected_components(mask).max() == 1
    labels = watershed_split(mask)
    assert labels.max() == 2
    assert set(np.unique(labels[a & ~b])) == {1} and set(np.unique(labels[b & ~a])) == {2}
    assert np.array_equal(labels > 0, mask)


def test_border_channel_watershed_and_3class_instances():
    a, b = _two_touching_discs()
    from scipy import ndimage as ndi

    inner = ndi.binary_erosion(a, iterations=2) | ndi.binary_erosion(b, iterations=2)
    inner &= ~(ndi.binary_dilation(a, iterations=2) & ndi.binary_dilation(b, iterations=2))
    border = (a | b) & ~inner
    prob = np.stack([~(a | b), inner, border]).astype(np.float32)
    labels = instances_from_probabilities(prob, split="border", border_class=2)
    assert labels.max() == 2
    assert np.array_equal(labels > 0, a | b)
    with pytest.raises(ConfigError):
        instances_from_probabilities(prob, split="border")


def test_border_split_seeds_from_confident_interiors_not_from_an_uncertain_gap():
    # Two cells whose contact is uncertain (each class ~1/3): "not border" would join both seeds
    # through the contact; seeds from confident interiors keep the cells apart.
    prob = np.zeros((3, 12, 25), np.float32)
    prob[0] = 1.0
    for x0 in (2, 13):
        prob[:, 2:10, x0 : x0 + 10] = np.array([0.0, 0.2, 0.8])[:, None, None]  # a rim of border
        prob[:, 4:8, x0 + 2 : x0 + 8] = np.array([0.0, 0.9, 0.1])[:, None, None]  # a confident interior
    prob[:, 4:8, 10:15] = np.array([0.34, 0.33, 0.33])[:, None, None]  # the uncertain contact between them
    labels = instances_from_probabilities(prob, split="border", border_class=2, threshold_value=0.5)
    assert labels.max() == 2 and labels[6, 5] != labels[6, 18]
    mask = prob[1] + prob[2] > 0.5
    old_rule = watershed_split(mask, border=prob[2], seeds=prob[2] < 0.5)  # the earlier seeds: "not border"
    assert old_rule.max() == 1  # what the seeds from confident interiors fix
    with pytest.raises(InputError, match="seeds"):
        watershed_split(mask, border=prob[2])


def test_border_split_makes_no_object_of_border_without_an_interior():
    """A halo of border probability in empty background (no confident interior) is no object;
    the distance split still keeps every component of its mask."""
    prob = np.zeros((3, 12, 30), np.float32)
    prob[0] = 1.0
    prob[:, 2:10, 2:12] = np.array([0.0, 0.2, 0.8])[:, None, None]  # a cell: rim of border...
    prob[:, 4:8, 4:10] = np.array([0.0, 0.9, 0.1])[:, None, None]  # ...around a confident interior
    prob[:, 3:9, 18:26] = np.array([0.45, 0.1, 0.45])[:, None, None]  # 48 px of border alone: cell+border 0.55
    labels = instances_from_probabilities(prob, split="border", border_class=2, min_size=4)
    assert labels.max() == 1 and labels[6, 6] == 1 and not labels[:, 15:].any()
    assert np.array_equal(labels > 0, (prob[1] + prob[2] > 0.5) & (np.arange(30) < 15))
    two = np.zeros((9, 20), bool)
    two[1:8, 1:6] = two[2:4, 10:12] = True  # a block and a 4-pixel speck: both kept by the distance split
    assert watershed_split(two).max() == 2


def test_small_object_removal_and_sequential_labels():
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3] = 5
    labels[5, 5] = 9
    labels[7:10, 7:10] = 2
    out = remove_small_objects(labels, 4)
    assert out.max() == 2 and (out[5, 5] == 0) and out[0, 0] == 1 and out[8, 8] == 2
    assert relabel_sequential(np.array([3, 0, 3, 8])).tolist() == [1, 0, 1, 2]


def test_label_dtypes_uint16_uint32():
    assert label_dtype(10) == np.uint16 and label_dtype(70000) == np.uint32
    big = np.arange(70001, dtype=np.int64).reshape(1, -1)
    assert as_label_image(big).dtype == np.uint32
    many = np.zeros((3, 2 * 70000), bool)
    many[1, ::2] = True
    assert connected_components(many).dtype == np.uint32


def test_instances_3d_and_min_size():
    vol = np.zeros((2, 8, 10, 10), np.float32)
    vol[1, 1:4, 1:4, 1:4] = 1
    vol[1, 6, 8, 8] = 1
    vol[0] = 1 - vol[1]
    labels = instances_from_probabilities(vol, min_size=5)
    assert labels.shape == (8, 10, 10) and labels.max() == 1
    assert instances_from_probabilities(vol, split="distance", h=0).max() == 2


def _membranes_with_organelles():
    """Cells (0.9) cut by a membrane cross reaching the border (0.05), a 9-pixel dark blob in one
    cell and a 20-pixel one in another."""
    prob = np.full((41, 41), 0.9, np.float32)
    prob[20, :] = prob[:, 20] = 0.05
    prob[5:8, 5:8] = 0.2  # 9 pixels
    prob[28:32, 28:33] = 0.3  # 20 pixels
    return prob


def test_fill_small_holes_fills_only_enclosed_dark_structures_below_the_area():
    prob = _membranes_with_organelles()
    out = fill_small_holes(prob, 10)
    assert out.dtype == prob.dtype and out.shape == prob.shape
    assert (out[5:8, 5:8] == np.float32(0.9)).all()  # the small blob takes its rim's level
    np.testing.assert_array_equal(out[28:32, 28:33], prob[28:32, 28:33])  # the larger one stays
    np.testing.assert_array_equal(out[20], prob[20])  # the membrane network is untouched
    assert (out >= prob).all() and np.count_nonzero(out != prob) == 9
    for th in np.arange(0.0, 1.0, 0.1):  # at every challenge threshold: one enclosed hole fewer, or none to fill
        holes = [connected_components(~(m > th), connectivity=2).max() for m in (prob, out)]
        assert int(holes[1]) == int(holes[0]) - (1 if 0.25 < th < 0.85 else 0)  # the blob is 0.2, its rim 0.9
    np.testing.assert_array_equal(fill_small_holes(prob, 21)[28:32, 28:33], np.float32(0.9))
    assert fill_small_holes(prob, 0) is prob and fill_small_holes(prob, 1) is prob


def test_fill_small_holes_refuses_a_negative_or_fractional_area():
    for bad in (-1, 2.5):
        with pytest.raises(ConfigError, match="fill_holes"):
            fill_small_holes(np.zeros((4, 4), np.float32), bad)


def test_small_objects_at_the_edge_go_and_the_rest_stay():
    labels = np.zeros((12, 12), np.int64)
    labels[0:2, 3:5] = 1  # 4 px at the top edge: goes
    labels[5:7, 10:12] = 2  # 4 px at the right edge: goes
    labels[11, 0] = 3  # 1 px in the bottom-left corner: goes
    labels[0:5, 7:9] = 4  # 10 px at the top edge: stays
    labels[5:7, 4:6] = 5  # 4 px inside: stays, however small
    out = remove_small_edge_objects(labels, 5)
    assert out.max() == 2 and out.dtype == np.uint16
    np.testing.assert_array_equal(out > 0, (labels == 4) | (labels == 5))
    np.testing.assert_array_equal(remove_small_edge_objects(labels, 0), relabel_sequential(labels))
    assert remove_small_edge_objects(labels, 11).max() == 1  # 4 goes too; 5 never touches an edge


def test_small_edge_objects_of_a_stack_of_sections_are_judged_in_plane():
    labels = np.zeros((3, 8, 8), np.int64)
    labels[0, 3:5, 3:5] = 1  # inside section 0: on the stack's first plane, not at an edge of the section
    labels[1, 0, 2:4] = 2  # at the section's top edge
    assert remove_small_edge_objects(labels, 10, edge_dims=2).max() == 1  # only 2 goes
    assert remove_small_edge_objects(labels, 10).max() == 0  # as a volume, the first plane is an edge too
    with pytest.raises(ConfigError, match="edge_dims 4"):
        remove_small_edge_objects(labels, 10, edge_dims=4)


def test_instances_drop_slivers_at_the_edge_after_the_split():
    a, b = _two_touching_discs()
    fg = a | b
    fg[0:3, 50:55] = True  # a sliver of a cell cut by the top edge: 15 px
    p = np.stack([1.0 - fg, fg]).astype(np.float32)
    plain = instances_from_probabilities(p, split="distance")
    edged = instances_from_probabilities(p, split="distance", edge_min_size=16)
    assert plain.max() == 3 and edged.max() == 2
    assert not edged[0:3, 50:55].any() and np.array_equal(edged > 0, a | b)
