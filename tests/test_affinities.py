"""Affinity outputs: offsets, their targets and loss, test-time augmentation, the mutex watershed,
and a model trained with them through training, ``predict`` and ``cv``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unetseg.affinities import (
    affinity_targets,
    attractive_first,
    check_offsets,
    mutex_boundaries,
    mutex_regions,
    transformed_offset,
    tta_permutation,
)
from unetseg.errors import ConfigError, InputError, ModelFileError
from unetseg.inference import Predictor
from unetseg.inference.engine import dihedral_transforms, tta_forward
from unetseg.losses import LossConfig, affinity_loss, build_loss
from unetseg.models import UNet, build, load_with_config, save
from unetseg.models.card import Postprocess
from unetseg.postprocess import foreground_postprocess

NEAR = [[-1, 0], [1, 0], [0, -1], [0, 1]]
OFFSETS = check_offsets(NEAR + [[-3, 0], [3, 0], [0, -3], [0, 3], [-2, -2], [2, 2], [-2, 2], [2, -2]], 2)


def _two_cells(gap: bool = False) -> np.ndarray:
    lab = np.ones((12, 13), np.int64)
    lab[:, 6] = 0
    lab[:, 7:] = 2
    if gap:
        lab[5, 6] = 1
    return lab


@pytest.mark.parametrize("k, flip", dihedral_transforms(2))
def test_transformed_offset_is_where_the_test_time_transform_moves_a_pixel(k, flip):
    from unetseg.inference.engine import _apply

    for off in OFFSETS:
        img = torch.zeros(1, 1, 9, 9)
        img[0, 0, 4, 4] = 1.0
        img[0, 0, 4 + off[0], 4 + off[1]] = 2.0
        moved = _apply(img, k, flip)[0, 0]
        a = torch.nonzero(moved == 1)[0]
        b = torch.nonzero(moved == 2)[0]
        assert tuple((b - a).tolist()) == transformed_offset(off, k, flip)


def test_offsets_must_be_closed_under_rotations_and_flips_and_well_formed():
    assert check_offsets(NEAR, 2) == tuple(tuple(o) for o in NEAR)
    for bad, match in (([[-1, 0], [0, -1]], "not closed"), ([[0, 0]], "not all 0"), ([[1, 0, 0]], "list of 2"),
                       (NEAR + [[1, 0]], "twice"), ([[1.5, 0]], "integers")):
        with pytest.raises(ValueError, match=match):
            check_offsets(bad, 2)
    with pytest.raises(ModelFileError, match="not closed"):
        build("UNet", {"affinity_offsets": [[0, 1]]})


class _AffinityOracle(nn.Module):
    """Returns, for a label image as input, 2 class logits and the exact affinity logits of its
    labels (cyclic shifts, so every rotation/flip of the input gives the rotated/flipped answer)."""

    num_classes = 2
    affinity_offsets = OFFSETS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lab = x[:, 0]
        chans = [torch.zeros_like(lab), lab]
        for dy, dx in self.affinity_offsets:
            other = torch.roll(lab, shifts=(-dy, -dx), dims=(-2, -1))
            chans.append(torch.where(other == lab, 8.0, -8.0))
        return torch.stack(chans, 1)


def test_tta_maps_every_affinity_channel_back_onto_its_offset():
    lab = np.random.default_rng(0).integers(0, 3, (2, 1, 16, 16)).astype(np.float32)
    kw = dict(device=torch.device("cpu"), precision="fp32", fmt=torch.contiguous_format)
    plain = tta_forward(_AffinityOracle(), lab, tta=False, **kw)
    averaged = tta_forward(_AffinityOracle(), lab, tta=True, **kw)
    np.testing.assert_allclose(averaged, plain, atol=1e-6)  # a wrong permutation mixes offsets
    assert plain[:, 2:].min() < 0.01 and plain[:, 2:].max() > 0.99


def test_tta_permutation_inverts_the_transform():
    for k, flip in dihedral_transforms(2):
        perm = tta_permutation(OFFSETS, k, flip)
        assert sorted(perm) == list(range(len(OFFSETS)))
        assert all(transformed_offset(OFFSETS[perm[j]], k, flip) == OFFSETS[j] for j in range(len(OFFSETS)))


def test_affinity_targets_separate_objects_and_the_boundary():
    lab = _two_cells()
    aff, mask = affinity_targets(lab, OFFSETS)
    i = OFFSETS.index((0, 3))
    assert aff[i, 0, 2] == 1 and aff[i, 0, 4] == 0 and aff[i, 0, 7] == 1  # same cell / across / same cell
    assert not mask[i, 0, 10:].any() and mask[i, 0, :10].all()  # the partner outside the image does not count
    assert aff[:, :, 6].max() == 0  # the boundary belongs to no object
    _, masked = affinity_targets(lab, OFFSETS, valid=np.arange(13)[None, :].repeat(12, 0) < 4)
    assert not masked[i, 0, 1:].any() and masked[i, 0, 0]


def test_mutex_watershed_keeps_cells_apart_through_a_gap_the_near_affinities_close():
    lab = _two_cells(gap=True)
    aff, _ = affinity_targets(lab, OFFSETS)
    aff[OFFSETS.index((0, 1)), 5, 6] = aff[OFFSETS.index((0, -1)), 5, 7] = 0.7
    prob = (lab > 0).astype(np.float32)
    regions = mutex_regions(prob, aff, OFFSETS)
    assert len(np.unique(regions)) == 2 and regions[0, 0] != regions[0, 12]
    thinned = mutex_regions(prob, aff, OFFSETS, stride=2)  # every other pixel's repulsive edges still hold the gap
    assert len(np.unique(thinned)) == 2 and thinned[0, 0] != thinned[0, 12]
    closed = mutex_boundaries(prob, aff, OFFSETS)
    assert (closed[:, 5:8] == 0).any(axis=1).all() and np.array_equal(closed[:, :5], prob[:, :5])
    with pytest.raises(InputError, match="affinities"):
        mutex_regions(prob, aff[:3], OFFSETS)
    assert attractive_first(OFFSETS)[1] == 4


def test_affinity_loss_is_small_for_the_right_logits_and_split_from_the_class_loss():
    lab = _two_cells()
    target = torch.from_numpy((lab > 0).astype(np.int64))[None]
    aff, _ = affinity_targets(lab, OFFSETS)
    right = torch.from_numpy(aff * 20 - 10)[None]
    assert float(affinity_loss(right, target, offsets=OFFSETS)) < 1e-3
    assert float(affinity_loss(-right, target, offsets=OFFSETS)) > 5
    cfg = LossConfig(name="ce")
    classes = torch.randn(1, 2, 12, 13)
    batch = {"target": target}
    both = build_loss(cfg, num_classes=2, affinity_offsets=OFFSETS)(torch.cat([classes, right], 1), batch)
    assert float(both) == pytest.approx(float(build_loss(cfg)(classes, batch)) + float(affinity_loss(right, target, offsets=OFFSETS)), rel=1e-5)
    with pytest.raises(ConfigError, match="affinity_weight"):
        build_loss(LossConfig(affinity_weight=-1.0))


def test_unet_with_affinities_saves_loads_and_predicts_classes_unless_asked(tmp_path):
    torch.manual_seed(0)
    net = UNet(1, 2, depth=2, base_channels=2, affinity_offsets=[list(o) for o in OFFSETS])
    assert net.head.out_channels == 2 + len(OFFSETS) and net.num_classes == 2
    assert "affinity_offsets" not in UNet(1, 2, depth=2, base_channels=2).config  # plain model files unchanged
    loaded, _ = load_with_config(save(net, tmp_path / "m.safetensors"))
    assert loaded.affinity_offsets == OFFSETS
    p = Predictor(tmp_path / "m.safetensors", device="cpu", precision="fp32")
    image = np.random.default_rng(1).normal(size=(30, 33)).astype(np.float32)
    classes = p.predict(image, tile_shape=16, tta=True)
    everything = p.predict(image, tile_shape=16, tta=True, affinities=True)
    assert classes.shape == (2, 30, 33) and everything.shape == (p.num_outputs, 30, 33) == (2 + len(OFFSETS), 30, 33)
    np.testing.assert_allclose(everything[:2], classes, atol=1e-6)
    np.testing.assert_allclose(classes.sum(0), 1.0, atol=1e-5)  # softmax over the classes only


def test_postprocess_card_and_foreground_postprocess_need_affinities():
    with pytest.raises(ConfigError, match="mutex_watershed"):
        Postprocess(mutex_watershed=True, agglomerate=0.1)
    with pytest.raises(ConfigError, match="mutex_watershed"):
        Postprocess(mutex_watershed="yes")
    probs = np.stack([np.zeros((12, 13), np.float32), np.ones((12, 13), np.float32)])
    with pytest.raises(InputError, match="affinity outputs"):
        foreground_postprocess(probs.copy(), 1, Postprocess(mutex_watershed=True))
    aff, _ = affinity_targets(_two_cells(), OFFSETS)
    out = foreground_postprocess(probs.copy(), 1, Postprocess(mutex_watershed=True), affinities=aff, offsets=OFFSETS)
    assert (out[1][:, 5:8] == 0).any(axis=1).all() and out[1][:, :4].min() == 1.0


AFFINITY_RECIPE = """
model: {{arch: UNet, args: {{depth: 2, base_channels: 4, dropout: 0.0, affinity_offsets: {offsets}}}}}
train_data: {{path: {data}, select: ["00", "01", "02"]}}
val_data: {{path: {data}, select: ["03"]}}
data: {{target: {{kind: binary, foreground_value: 255, class_names: [membrane, cell]}}}}
loss: {{name: ce, affinity_weight: 1.0}}
schedule: {{steps: 4}}
validation: {{every: 2, metric: v_rand}}
postprocess: {{fill_holes: 5, mutex_watershed: true}}
runtime: {{device: cpu, precision: fp32, threads: 1}}
tile: [28, 28]
"""


def test_a_recipe_with_affinities_trains_predicts_and_cross_validates(tmp_path, make_em_dataset):
    from unetseg.cli import main
    from unetseg.io import read_image
    from unetseg.models import load_card

    data = make_em_dataset(tmp_path / "data", n=4, size=48)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(AFFINITY_RECIPE.format(data=data, offsets=[list(o) for o in OFFSETS]))
    assert main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert load_card(tmp_path / "run").postprocess.mutex_watershed
    for output in ("prob", "labels"):
        assert main(["predict", "--model", str(tmp_path / "run"), "--tta", "--output", output, str(data / "images" / "03.png"),
                     "--out", str(tmp_path / output)]) == 0
        assert read_image(tmp_path / output / "03.tif").shape == (48, 48)
    from unetseg.inference import predict_file

    with pytest.raises(InputError, match="in this process"):  # Dask computes the class channels only
        predict_file(tmp_path / "run", data / "images" / "03.png", tmp_path / "dask.tif", dask_scheduler="threads")
    assert not (tmp_path / "dask.tif").exists()
    assert main(["cv", "--config", str(recipe), "--folds", "2", "--out", str(tmp_path / "cv"), "--no-progress"]) == 0
    assert read_image(tmp_path / "cv" / "fold0" / "held_out" / "00.tif").shape == (48, 48)


def test_bioimageio_export_refuses_affinity_outputs_with_a_reason(tmp_path):
    from unetseg.export import export_bioimageio

    net = UNet(1, 2, depth=2, base_channels=2, affinity_offsets=[list(o) for o in NEAR])
    with pytest.raises(ModelFileError, match="affinity outputs"):
        export_bioimageio(save(net, tmp_path / "m.safetensors"), tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def test_a_plain_model_starts_an_affinity_model_with_a_new_head(tmp_path):
    from unetseg.train.init import init_from

    plain = save(UNet(1, 2, depth=2, base_channels=2), tmp_path / "plain.safetensors")
    net = UNet(1, 2, depth=2, base_channels=2, affinity_offsets=[list(o) for o in NEAR])
    with pytest.raises(ConfigError, match="reinit_head"):
        init_from(net, plain)
    assert init_from(net, plain, reinit_head=True) == ["head.weight", "head.bias"]
