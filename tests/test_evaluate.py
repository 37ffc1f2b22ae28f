"""Evaluation protocols, stack loading, metrics files and the ``unetseg evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from unetseg.cli import main
from unetseg.errors import InputError
from unetseg.evaluate import (
    ISBI_KEYS,
    as_instances,
    evaluate_binary,
    evaluate_ctc,
    evaluate_instances,
    evaluate_isbi2012,
    isbi_error_maps,
    load_stack,
    run_protocol,
    write_metrics,
)
from unetseg.io import read_image, write_image


def small_isbi(rng: np.random.Generator, z: int = 2, size: int = 40):
    """Synthetic 0/255 cell labels with 1-2 px membranes and a noisy probability map."""
    gts, probs = [], []
    for _ in range(z):
        seeds = np.zeros((size, size), int)
        pts = rng.integers(0, size, (8, 2))
        seeds[pts[:, 0], pts[:, 1]] = np.arange(1, 9)
        _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        regions = seeds[iy, ix]
        membrane = ndimage.morphological_gradient(regions, size=2) > 0
        gt = np.where(membrane, 0, 255).astype(np.uint8)
        prob = ndimage.gaussian_filter((gt > 0).astype(float), 1.0) + rng.normal(0, 0.1, gt.shape)
        gts.append(gt)
        probs.append(np.clip(prob, 0, 1).astype(np.float32))
    return np.stack(probs), np.stack(gts)


# ------------------------------------------------------------------ loading


def test_load_stack_single_multipage_and_folder(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_image(tmp_path / "one.png", a)
    assert load_stack(tmp_path / "one.png").shape == (1, 3, 4)
    stack = np.stack([a, a + 1, a + 2])
    write_image(tmp_path / "multi.tif", stack)
    assert np.array_equal(load_stack(tmp_path / "multi.tif"), stack)
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in (10, 2, 1):
        write_image(folder / f"s{i}.tif", a + i)
    got = load_stack(folder)
    assert got.shape == (3, 3, 4) and got[0, 0, 0] == 1 and got[2, 0, 0] == 10  # natural order


def test_load_stack_errors(tmp_path):
    with pytest.raises(InputError, match="no images"):
        load_stack(tmp_path)
    write_image(tmp_path / "a.tif", np.zeros((3, 4), np.uint8))
    write_image(tmp_path / "b.tif", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="differ in shape"):
        load_stack(tmp_path)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 9
    write_image(tmp_path / "c.png", rgb)
    with pytest.raises(InputError, match="colour"):
        load_stack(tmp_path / "c.png")
    with pytest.raises(InputError):
        load_stack(tmp_path / "missing.tif")


# ------------------------------------------------------------------ isbi2012


def test_isbi_identical_prediction_scores_perfectly():
    _, gt = small_isbi(np.random.default_rng(0))
    m = evaluate_isbi2012(gt / 255.0, gt)
    for key in ISBI_KEYS:
        assert set(m[key]) == {"value", "threshold"}
    assert m["pixel_error"]["value"] == 0.0
    assert m["pixel_error_f1"]["value"] == 0.0
    assert m["rand_error"]["value"] == 0.0
    assert m["v_rand"]["value"] == 1.0
    assert m["v_info"]["value"] == pytest.approx(1.0)
    assert m["warping_error"]["value"] == 0.0
    assert m["warping_error_splits_mergers"]["value"] == 0.0
    assert len(m["curves"]["thresholds"]) == 10 and len(m["curves"]["thresholds_thinned"]) == 11


def test_isbi_best_threshold_is_chosen_from_the_sweep():
    prob, gt = small_isbi(np.random.default_rng(1))
    m = evaluate_isbi2012(prob, gt)
    c = m["curves"]
    assert m["pixel_error"]["value"] == min(c["pixel_error"])
    assert m["pixel_error"]["threshold"] == c["thresholds"][int(np.argmin(c["pixel_error"]))]
    assert m["warping_error"]["value"] == min(c["warping_error"])
    assert m["v_rand"]["value"] == max(c["v_rand"])
    assert m["pixel_error_f1"]["value"] == pytest.approx(1 - max(c["pixel_f1"]))
    assert 0 <= m["warping_error_splits_mergers"]["value"] <= m["warping_error"]["value"] + 1e-12
    assert len(m["per_image"]) == 2


def test_isbi_custom_thresholds_for_quick_validation():
    prob, gt = small_isbi(np.random.default_rng(4), z=1)
    m = evaluate_isbi2012(prob, gt, thresholds=[0.5], thresholds_thinned=[0.5])
    assert m["warping_error"]["threshold"] == 0.5 and m["v_rand"]["threshold"] == 0.5
    full = evaluate_isbi2012(prob, gt)
    i = full["curves"]["thresholds"].index(0.5)
    assert m["warping_error"]["value"] == full["curves"]["warping_error"][i]
    with pytest.raises(InputError):
        evaluate_isbi2012(prob, gt, thresholds=[])


def test_isbi_integer_maps_are_scaled_and_out_of_range_maps_refused():
    _, gt = small_isbi(np.random.default_rng(2), z=1)
    assert evaluate_isbi2012(gt, gt)["pixel_error"]["value"] == 0.0  # uint8 0/255 map
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        evaluate_isbi2012(gt.astype(np.float32), gt)
    with pytest.raises(InputError, match="shape"):
        evaluate_isbi2012(gt[:, :10] / 255.0, gt)


@pytest.mark.data
def test_isbi_protocol_on_two_real_slices_with_a_degraded_label(isbi_dir):
    gt = np.stack([read_image(isbi_dir / "labels" / f"{i:02d}.png") for i in (0, 1)])
    pred = (gt > 0).astype(np.float32)
    pred[:, 100:300, 200] = 1.0  # cut a membrane-crossing line: merges where it crosses membrane
    pred[:, 300, 50:450] = 0.0  # draw a membrane through cells: splits
    pred = ndimage.uniform_filter(pred, size=(1, 3, 3))  # soft edges: a probability map
    m = evaluate_isbi2012(pred, gt)
    assert 0 < m["pixel_error"]["value"] < 0.1
    assert 0 < m["warping_error"]["value"] < 0.01
    assert m["warping_error_splits_mergers"]["value"] > 0
    assert 0.5 < m["v_rand"]["value"] < 1.0 and 0.5 < m["v_info"]["value"] < 1.0
    maps = isbi_error_maps(pred, gt, m["warping_error_splits_mergers"]["threshold"])
    assert len(maps) == 2 and np.isin(maps[0], [1, 2]).any()
    perfect = evaluate_isbi2012(gt.astype(np.float32) / 255, gt)
    assert perfect["warping_error"]["value"] == 0.0 and perfect["v_rand"]["value"] == 1.0


# ------------------------------------------------------------------ ctc / binary / instances


def test_ctc_seg():
    gt = np.array([[[1, 1, 0, 2, 2]], [[3, 3, 3, 3, 0]]])
    pred = np.array([[[5, 5, 5, 5, 5]], [[4, 4, 4, 4, 0]]])
    m = evaluate_ctc(pred, gt)
    # frame 0: both cells match the one object with J = 2/5; frame 1: J = 1 -> pooled mean
    assert m["seg"]["value"] == pytest.approx((0.4 + 0.4 + 1.0) / 3)
    assert m["n_objects"] == 3 and m["per_image"][1]["seg"] == 1.0
    assert m["unmatched_fraction"]["value"] == 0.0


def test_ctc_counts_predicted_objects_that_touch_no_reference_cell():
    gt = np.array([[[1, 1, 0, 0, 0, 0]], [[2, 0, 0, 0, 0, 0]]])
    pred = np.array([[[7, 7, 0, 8, 0, 9]], [[3, 0, 0, 0, 0, 0]]])  # 8 and 9 lie in empty background
    m = evaluate_ctc(pred, gt)
    assert m["unmatched_fraction"]["value"] == pytest.approx(2 / 4)
    assert m["per_image"][0]["unmatched_objects"] == 2 and m["per_image"][1]["predicted_objects"] == 1
    assert m["seg"]["value"] == 1.0  # SEG alone does not see them


@pytest.mark.data
def test_ctc_on_real_hela_labels(hela_dir):
    gt = read_image(hela_dir / "01_GT" / "SEG" / "man_seg002.tif")
    assert evaluate_ctc(gt, gt)["seg"]["value"] == 1.0
    eroded = np.where(ndimage.binary_erosion(gt > 0, iterations=3), gt, 0)
    assert 0.5 < evaluate_ctc(eroded, gt)["seg"]["value"] < 1.0


def test_binary_protocol():
    gt = np.zeros((2, 6, 6), np.uint8)
    gt[:, 1:4, 1:4] = 1
    prob = np.where(gt > 0, 0.8, 0.05).astype(np.float32)
    prob[0, 0, 0] = 0.6  # one false positive below 0.6
    m = evaluate_binary(prob, gt)
    assert m["dice"]["value"] == 1.0 and m["dice"]["threshold"] >= 0.6
    m = evaluate_binary(gt, gt)
    assert m["dice"] == {"value": 1.0, "threshold": None}


@pytest.mark.data
def test_instances_protocol_on_dsb_sample(dsb_dir):
    gt = read_image(dsb_dir / "mask2d.tif")
    m = evaluate_instances(gt, gt)
    assert m["f1"]["value"] == 1.0 and m["mean_ap"]["value"] == 1.0
    assert m["counts"]["n_true"] == 125
    # a probability map made from the foreground: touching nuclei merge, F1 drops
    prob = ndimage.gaussian_filter((gt > 0).astype(float), 1.0)
    m2 = evaluate_instances(prob, gt)
    assert 0.3 < m2["f1"]["value"] < 1.0 and m2["f1"]["threshold"] is not None


def test_as_instances_and_run_protocol_dispatch():
    assert as_instances(np.array([[1, 0, 1]])).tolist() == [[1, 0, 2]]
    assert as_instances(np.array([[0.9, 0.1, 0.7]])).tolist() == [[1, 0, 2]]
    gt = np.array([[1, 1, 0, 2, 2]])
    assert run_protocol("ctc", gt, gt)["seg"]["value"] == 1.0
    with pytest.raises(InputError, match="unknown protocol"):
        run_protocol("nope", gt, gt)


def test_write_metrics_replaces_nan_with_null(tmp_path):
    j, c = write_metrics(tmp_path, {"seg": {"value": float("nan"), "threshold": None}, "x": np.float32(1.5)})
    data = json.loads(j.read_text())
    assert data["seg"]["value"] is None and data["x"] == 1.5
    assert c.read_text().splitlines() == ["metric,value,threshold", "seg,,"]


# ------------------------------------------------------------------ CLI


def test_cli_evaluate_isbi_writes_metrics_and_report(tmp_path, capsys):
    prob, gt = small_isbi(np.random.default_rng(3))
    write_image(tmp_path / "pred.tif", prob)
    write_image(tmp_path / "gt.tif", gt)
    write_image(tmp_path / "img.tif", (gt // 2).astype(np.uint8))
    out = tmp_path / "out"
    rc = main(["evaluate", "--pred", str(tmp_path / "pred.tif"), "--gt", str(tmp_path / "gt.tif"), "--protocol", "isbi2012", "--out", str(out), "--image", str(tmp_path / "img.tif")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "warping_error_splits_mergers" in printed
    data = json.loads((out / "metrics.json").read_text())
    for key in ISBI_KEYS:
        assert isinstance(data[key]["value"], float) and isinstance(data[key]["threshold"], float)
    assert (out / "metrics.csv").read_text().startswith("metric,value,threshold\npixel_error,")
    html = (out / "report.html").read_text()
    assert "figures/curves.png" in html and (out / "figures" / "curves.png").is_file()
    assert (out / "figures" / "errors_001.png").is_file() and (out / "figures" / "overlay_000.png").is_file()
    assert not list(out.glob(".*.tmp"))


def test_cli_evaluate_ctc_and_user_errors(tmp_path, capsys):
    gt = np.array([[1, 1, 0, 2, 2]] * 4, np.uint16)
    write_image(tmp_path / "gt.tif", gt)
    rc = main(["evaluate", "--pred", str(tmp_path / "gt.tif"), "--gt", str(tmp_path / "gt.tif"), "--protocol", "ctc", "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 0 and json.loads((tmp_path / "o" / "metrics.json").read_text())["seg"]["value"] == 1.0
    assert not (tmp_path / "o" / "report.html").exists()
    write_image(tmp_path / "small.tif", gt[:2])
    rc = main(["evaluate", "--pred", str(tmp_path / "small.tif"), "--gt", str(tmp_path / "gt.tif"), "--protocol", "ctc", "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "differ in shape" in capsys.readouterr().err
    rc = main(["evaluate", "--pred", str(tmp_path / "missing.tif"), "--gt", str(tmp_path / "gt.tif"), "--protocol", "ctc", "--out", str(tmp_path / "o")])
    assert rc == 1


def test_evaluate_to_folder_for_demo_and_training(tmp_path):
    from unetseg.evaluate import evaluate_to_folder

    gt = np.zeros((2, 12, 12), np.uint8)
    gt[:, 2:7, 2:7] = 1
    gt[:, 8:11, 8:11] = 1
    prob = np.where(gt > 0, 0.9, 0.1).astype(np.float32)
    m = evaluate_to_folder("instances", prob, gt, tmp_path, images=gt * 100, names=["a", "b"], extra={"run": "x"})
    assert m["f1"]["value"] == 1.0 and m["run"] == "x"
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.json", "metrics.csv", "report.html", "figures"}
    with pytest.raises(InputError, match="images"):
        evaluate_to_folder("binary", prob, gt, tmp_path, images=gt[:1])


def test_float_masks_with_values_above_one_are_masks_not_probabilities():
    gt = np.zeros((1, 6, 6), np.uint8)
    gt[0, 1:4, 1:4] = 255
    m = evaluate_binary(gt.astype(np.float32), gt)
    assert m["dice"] == {"value": 1.0, "threshold": None}
    assert evaluate_instances(gt.astype(np.float32), gt)["f1"]["value"] == 1.0


def test_isbi_warns_about_an_inverted_map():
    _, gt = small_isbi(np.random.default_rng(5), z=1)
    m = evaluate_isbi2012(1.0 - gt / 255.0, gt, thresholds=[0.5], thresholds_thinned=[0.5])
    assert "inverted" in m["warnings"][0]
    assert "warnings" not in evaluate_isbi2012(gt / 255.0, gt, thresholds=[0.5], thresholds_thinned=[0.5])


def test_isbi_warns_about_an_inverted_soft_map():
    prob, gt = small_isbi(np.random.default_rng(6), z=1)
    m = evaluate_isbi2012(1.0 - prob, gt, thresholds=[0.0, 0.5], thresholds_thinned=[0.5])
    assert "warnings" in m


@pytest.mark.parametrize("protocol, which", [("ctc", "--gt"), ("ctc", "--pred"), ("instances", "--gt")])
def test_instance_protocols_refuse_a_probability_map_given_as_labels(tmp_path, capsys, protocol, which):
    from unetseg.cli import main

    labels = np.zeros((32, 32), np.uint16)
    labels[4:14, 4:14], labels[18:28, 18:28] = 1, 2
    prob = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    write_image(tmp_path / "labels.tif", labels)
    write_image(tmp_path / "prob.tif", prob)
    files = {"--gt": tmp_path / "labels.tif", "--pred": tmp_path / "labels.tif"}
    files[which] = tmp_path / "prob.tif"
    argv = ["evaluate", "--protocol", protocol, "--pred", str(files["--pred"]), "--gt", str(files["--gt"]), "--out", str(tmp_path / "e")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prob.tif" in err and "non-integer" in err, err
    assert not (tmp_path / "e" / "metrics.json").exists()
