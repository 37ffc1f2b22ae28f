"""Synthetic data: shapes, dtypes, label conventions, realism of the statistics, determinism, CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from unetseg import synthetic
from unetseg.cli import main
from unetseg.errors import ConfigError
from unetseg.io import list_images, read_image


def rng(seed=0):
    return np.random.default_rng(seed)


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, 1:], labels[:, :-1]), (labels[1:, :], labels[:-1, :])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs |= set(zip(np.minimum(a[m], b[m]).tolist(), np.maximum(a[m], b[m]).tolist()))
    return pairs


# ------------------------------------------------------------------------------------------ EM


@pytest.fixture(scope="module")
def em_samples():
    return [synthetic.em_membranes((256, 256), rng(s)) for s in range(3)]


def test_em_shapes_dtypes_values():
    image, labels = synthetic.em_membranes((100, 140), rng(1))
    assert image.shape == labels.shape == (100, 140)
    assert image.dtype == np.uint8 and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == {0, 255}


def test_em_membrane_fraction_and_contrast_like_isbi(em_samples):
    for image, labels in em_samples:
        membrane = labels == 0
        assert 0.12 < membrane.mean() < 0.35
        mem, cell = image[membrane].mean(), image[~membrane].mean()
        # ISBI 2012: about 86-100 on membrane, 143-151 on cells, std about 44.
        assert 70 < mem < 110 and 125 < cell < 170
        assert cell - mem > 35
        assert 28 < image.std() < 55


def test_em_is_not_solved_by_a_threshold(em_samples):
    """Organelles, texture and faint membranes: the best global threshold still errs a lot."""
    for image, labels in em_samples:
        membrane = labels == 0
        errors = [np.mean((image < t) != membrane) for t in range(60, 200, 2)]
        assert min(errors) > 0.08


def test_em_cells_are_irregular_and_varied(em_samples):
    for _, labels in em_samples:
        cells, n = ndi.label(labels == 255)
        sizes = np.bincount(cells.ravel())[1:]
        assert n > 20
        assert np.percentile(sizes, 90) > 3 * np.percentile(sizes, 25)


def test_em_membrane_width_varies():
    _, labels = synthetic.em_membranes((256, 256), rng(4))
    dist = ndi.distance_transform_edt(labels == 0)
    ridge = dist[(dist > 0) & (dist == ndi.maximum_filter(dist, size=3))]
    assert ridge.max() >= 3 * max(ridge.min(), 0.9)


def test_em_width_parameter_controls_membrane_fraction():
    thin = synthetic.em_membranes((192, 192), rng(2), membrane_width=(2, 3))[1]
    thick = synthetic.em_membranes((192, 192), rng(2), membrane_width=(9, 12))[1]
    assert (thick == 0).mean() > 2 * (thin == 0).mean()


def test_em_labels_independent_of_rendering_parameters():
    a = synthetic.em_membranes((96, 96), rng(3))
    b = synthetic.em_membranes((96, 96), rng(3), noise=0, vesicles=0, texture=5)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[0], b[0])


def test_em_deterministic_per_seed():
    a = synthetic.em_membranes((128, 128), rng(7))
    b = synthetic.em_membranes((128, 128), rng(7))
    c = synthetic.em_membranes((128, 128), rng(8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_em_512_is_fast():
    synthetic.em_membranes((64, 64), rng(0))  # warm imports
    start = time.perf_counter()
    synthetic.em_membranes((512, 512), rng(0))
    assert time.perf_counter() - start < 3.0  # about 0.3 s on one core; generous for a shared CPU


def test_em_volume_sections_are_continuous():
    images, labels = synthetic.em_volume((5, 128, 128), rng(3), z_step=2.0)
    assert images.shape == labels.shape == (5, 128, 128)
    assert images.dtype == labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) == {0, 255}
    adjacent = np.mean(labels[0] == labels[1])
    independent = np.mean(labels[0] == synthetic.em_membranes((128, 128), rng(99))[1])
    assert adjacent > independent + 0.05


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=(8, 8)), dict(shape=(64,)), dict(membrane_width=(5, 2)), dict(noise=-1), dict(cell_area=5)],
)
def test_em_rejects_bad_parameters(kwargs):
    shape = kwargs.pop("shape", (64, 64))
    with pytest.raises(ConfigError):
        synthetic.em_membranes(shape, rng(), **kwargs)


def test_em_matches_real_isbi_statistics(isbi_dir):
    real_fraction, real_gap = [], []
    for i in range(0, 24, 6):
        image = read_image(isbi_dir / "images" / f"{i:02d}.png").astype(float)
        labels = read_image(isbi_dir / "labels" / f"{i:02d}.png")
        real_fraction.append((labels == 0).mean())
        real_gap.append(image[labels == 255].mean() - image[labels == 0].mean())
    image, labels = synthetic.em_membranes((512, 512), rng(0))
    image = image.astype(float)
    assert abs((labels == 0).mean() - np.mean(real_fraction)) < 0.05
    gap = image[labels == 255].mean() - image[labels == 0].mean()
    assert abs(gap - np.mean(real_gap)) < 15


# ------------------------------------------------------------------------- touching cells


@pytest.mark.parametrize("style", ["dic", "fluorescence"])
def test_touching_cells_labels(style):
    image, labels = synthetic.touching_cells((256, 200), rng(5), style=style)
    assert image.shape == labels.shape == (256, 200)
    assert image.dtype == np.uint16 and labels.dtype == np.uint16
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))  # contiguous 1..K
    assert len(ids) - 1 >= 5
    assert 0.2 < (labels > 0).mean() < 0.7
    assert len(touching_pairs(labels)) >= 2  # instances touch with no background between
    for i in ids[1:]:
        assert ndi.label(labels == i)[1] == 1  # every instance is one connected piece


def test_touching_cells_carry_signal():
    image, labels = synthetic.touching_cells((256, 256), rng(6), style="fluorescence")
    fg = labels > 0
    assert image[fg].mean() > 2 * image[~fg].mean()
    image, labels = synthetic.touching_cells((256, 256), rng(6), style="dic")
    gy, gx = np.gradient(image.astype(float))
    edges = np.hypot(gx, gy)
    assert edges[labels > 0].mean() > 1.3 * edges[labels == 0].mean()


def test_touching_cells_deterministic_and_options():
    a = synthetic.touching_cells((128, 128), rng(1), n_cells=8)
    b = synthetic.touching_cells((128, 128), rng(1), n_cells=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ConfigError):
        synthetic.touching_cells((128, 128), rng(1), style="phase")
    with pytest.raises(ConfigError):
        synthetic.touching_cells((128, 128), rng(1), overlap=1.5)


def test_nuclei_mostly_separate():
    image, labels = synthetic.nuclei((256, 256), rng(2))
    n = int(labels.max())
    assert n > 30
    assert 0.08 < (labels > 0).mean() < 0.35
    touching = {i for pair in touching_pairs(labels) for i in pair}
    assert 0 < len(touching) < 0.6 * n
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()


# ------------------------------------------------------------------------------------ CLI


def test_cli_synth_writes_loader_layout(tmp_path):
    out = tmp_path / "em"
    assert main(["data", "synth", "em", "--out", str(out), "--count", "3", "--size", "96x128", "--seed", "4"]) == 0
    images, labels = list_images(out / "images"), list_images(out / "labels")
    assert [p.name for p in images] == [p.name for p in labels] == ["000.png", "001.png", "002.png"]
    image, label = read_image(images[1]), read_image(labels[1])
    assert image.shape == label.shape == (96, 128) and image.dtype == np.uint8
    assert set(np.unique(label).tolist()) <= {0, 255}
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["kind"] == "em" and manifest["seed"] == 4
    from unetseg.data import discover

    layout, pairs = discover(out)  # the training data loader finds the pairs
    assert layout == "folders" and [p.name for p in pairs] == ["000", "001", "002"]
    # Image i depends on (seed, i) only, not on --count.
    other = tmp_path / "em2"
    assert main(["data", "synth", "em", "--out", str(other), "--count", "2", "--size", "96x128", "--seed", "4"]) == 0
    assert np.array_equal(read_image(other / "images" / "001.png"), image)


def test_cli_synth_instances_and_refuses_non_empty(tmp_path, capsys):
    out = tmp_path / "cells"
    assert main(["data", "synth", "dic-cells", "--out", str(out), "--count", "1", "--size", "128"]) == 0
    label = read_image(out / "labels" / "000.tif")
    assert label.dtype == np.uint16 and label.max() >= 2
    assert main(["data", "synth", "dic-cells", "--out", str(out), "--count", "1", "--size", "128"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "synth", "nuclei", "--out", str(out), "--count", "1", "--size", "128", "--force"]) == 0
    assert json.loads((out / "synth.json").read_text())["kind"] == "nuclei"


def test_cli_synth_force_never_replaces_other_folders(tmp_path, capsys):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    assert main(["data", "synth", "em", "--out", str(precious), "--count", "1", "--size", "64", "--force"]) == 1
    assert "synth.json" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep"


def test_cli_synth_bad_size(tmp_path, capsys):
    assert main(["data", "synth", "em", "--out", str(tmp_path / "x"), "--size", "8"]) == 1
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_generate_unknown_kind():
    with pytest.raises(ConfigError):
        synthetic.generate("em-volume", (64, 64), rng())


def test_cli_synth_parameters(tmp_path, capsys):
    out = tmp_path / "thin"
    args = ["data", "synth", "em", "--out", str(out), "--count", "1", "--size", "128", "--seed", "2"]
    assert main(args + ["--set", "membrane_width=[2, 3]", "--set", "noise=0"]) == 0
    thin = read_image(out / "labels" / "000.png")
    assert json.loads((out / "synth.json").read_text())["params"] == {"membrane_width": [2, 3], "noise": 0}
    expected = synthetic.em_membranes((128, 128), np.random.default_rng([2, 0]), membrane_width=(2, 3), noise=0)[1]
    assert np.array_equal(thin, expected)
    bad = tmp_path / "bad"
    assert main(["data", "synth", "em", "--out", str(bad), "--set", "nosie=3"]) == 1
    err = capsys.readouterr().err
    assert "nosie" in err and "noise" in err
    assert not bad.exists()
    assert main(["data", "synth", "dic-cells", "--out", str(bad), "--set", "style=fluorescence"]) == 1
    assert main(["data", "synth", "em", "--out", str(bad), "--set", "noise"]) == 1
    assert not bad.exists()


def test_em_volume_parameters():
    a = synthetic.em_volume((2, 64, 64), rng(1), noise=0, blur=0)
    b = synthetic.em_volume((2, 64, 64), rng(1))
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[0], b[0])
    with pytest.raises(ConfigError, match="nosie"):
        synthetic.em_volume((2, 64, 64), rng(1), nosie=0)
    with pytest.raises(ConfigError):
        synthetic.em_volume((2, 64, 64), rng(1), noise=-1)
