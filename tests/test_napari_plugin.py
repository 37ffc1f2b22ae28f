"""The napari plugin with napari's own viewer fixture, headless under Xvfb (Mesa's software
OpenGL; ``make test`` starts it): segment = ``unetseg predict`` on the same pixels, Cancel within
one tile, a bad model is a notification, training from painted labels, sample data, a non-blank
screenshot."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

pytest.importorskip("napari", reason="needs the napari extra (make test installs it)")
if not os.environ.get("DISPLAY"):  # vispy's canvas needs OpenGL, which Qt's offscreen platform does not give
    pytest.skip("the viewer needs an X display: make test runs the suite under Xvfb (tools/headless.sh)", allow_module_level=True)

from unetseg.cli import main  # noqa: E402
from unetseg.io import read_image, write_image  # noqa: E402
from unetseg.models import ModelCard, UNet, save  # noqa: E402
from unetseg.napari_plugin import segment as seg_module  # noqa: E402
from unetseg.napari_plugin.sample import em_sample, em_section, sample_model  # noqa: E402
from unetseg.napari_plugin.segment import SegmentWidget  # noqa: E402
from unetseg.napari_plugin.train import TrainWidget  # noqa: E402


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("napari") / "m.safetensors"
    return save(UNet(1, 2, depth=2, base_channels=4), path, card=ModelCard(classes=("membrane", "cell"), task="instances"))


def _segment(qtbot, widget, **settings):
    for name, value in settings.items():
        getattr(widget, name).value = value
    worker = widget.start()
    qtbot.waitUntil(lambda: not worker.is_running and widget.run_button.enabled, timeout=120_000)
    return worker


def test_manifest_registers_widgets_and_sample_data():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("unetseg")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Segment with unetseg", "Train a unetseg model"}
    assert [s.key for s in manifest.contributions.sample_data] == ["synthetic-em"]


@pytest.fixture(scope="module")
def package_file(model_file, tmp_path_factory):
    """``model_file`` as a bioimage.io package (what the widget's model field also takes)."""
    pytest.importorskip("bioimageio.spec", reason="needs the export extra (make test installs it)")
    from unetseg.export import export_bioimageio

    return export_bioimageio(model_file, tmp_path_factory.mktemp("package") / "m.zip", authors=["test"])


@pytest.mark.parametrize("output, source", [("prob", "model"), ("labels", "model"), ("labels", "package")])
def test_segment_widget_equals_unetseg_predict(make_napari_viewer, qtbot, model_file, tmp_path, output, source, request):
    """The widget gives what `unetseg predict` of the model file gives, from the file or from its
    bioimage.io package."""
    viewer = make_napari_viewer()
    image, _ = em_section(shape=(150, 170))
    layer = viewer.add_image(image, name="em")
    widget = SegmentWidget(viewer)
    widget.image.reset_choices()
    widget.image.value = layer
    model = model_file if source == "model" else request.getfixturevalue("package_file")
    _segment(qtbot, widget, model=model, output=output, tile=36)
    write_image(tmp_path / "em.tif", image)
    assert main(["predict", "--model", str(model_file), "--device", "cpu", "--output", output, "--tile", "36",
                 str(tmp_path / "em.tif"), "--out", str(tmp_path / "out")]) == 0
    np.testing.assert_array_equal(widget.last_layer.data, read_image(tmp_path / "out" / "em.tif"))
    assert (widget.last_layer._type_string == "labels") == (output == "labels")


def test_cancel_stops_within_one_tile(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    layer = viewer.add_image(em_section(shape=(600, 600))[0], name="big")
    widget = SegmentWidget(viewer)
    widget.image.reset_choices()
    widget.image.value, widget.model.value, widget.tile.value = layer, model_file, 16
    worker = widget.start()
    qtbot.waitUntil(lambda: widget._tiles.n >= 2, timeout=60_000)
    seen = widget._tiles.n
    widget.cancel()
    qtbot.waitUntil(lambda: not worker.is_running and widget.run_button.enabled, timeout=60_000)
    assert widget._tiles.n <= seen + 1 < widget._tiles.total
    assert widget.last_layer is None and widget.status.value.startswith("cancelled")


def test_bad_model_is_a_notification_and_the_viewer_keeps_working(make_napari_viewer, qtbot, model_file, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(seg_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    layer = viewer.add_image(em_section(shape=(80, 80))[0], name="em")
    widget = SegmentWidget(viewer)
    widget.image.reset_choices()
    widget.image.value = layer
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    _segment(qtbot, widget, model=tmp_path / "bad.safetensors")
    assert len(shown) == 1 and "bad.safetensors" in shown[0] and widget.status.value == "failed"
    _segment(qtbot, widget, model=model_file)  # the same widget and viewer still work
    assert widget.last_layer is not None and len(viewer.layers) == 2


def test_current_slice_of_a_stack(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    stack = np.stack([em_section(seed=s, shape=(90, 100))[0] for s in range(3)])
    layer = viewer.add_image(stack, name="stack")
    viewer.dims.set_current_step(0, 2)
    widget = SegmentWidget(viewer)
    widget.image.reset_choices()
    widget.image.value = layer
    _segment(qtbot, widget, model=model_file, scope="current slice")
    assert widget.last_layer.data.shape == (1, 90, 100) and widget.last_layer.translate[0] == 2
    _segment(qtbot, widget, scope="whole stack")
    np.testing.assert_allclose(widget.last_layer.data[2], viewer.layers[1].data[0], atol=1e-6)


def test_train_widget_trains_50_steps_from_painted_labels_stops_and_resumes(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, labels = em_section(shape=(256, 256))
    widget = TrainWidget(viewer)
    viewer.add_image(image, name="em")
    viewer.add_labels(labels, name="painted")
    widget.image.reset_choices()
    widget.labels.reset_choices()
    widget.run_dir.value, widget.steps.value = tmp_path / "run", 50
    worker = widget.start()
    qtbot.waitUntil(lambda: len(widget.losses) >= 10, timeout=300_000)
    widget.stop()
    qtbot.waitUntil(lambda: not worker.is_running and widget.train_button.enabled, timeout=300_000)
    assert widget.result.status == "interrupted" and widget.resume_button.enabled and widget.result.step < 50
    worker = widget.start(resume=True)
    qtbot.waitUntil(lambda: not worker.is_running and widget.train_button.enabled, timeout=300_000)
    assert widget.result.step == 50 and widget.result.status == "completed"
    assert [s for s, _ in widget.losses] == list(range(1, 51))  # every step reported once, across the resume
    assert widget.last_layer.data.shape == (256, 256) and (tmp_path / "run" / "model.safetensors").is_file()
    assert widget.figure.axes[0].lines  # the loss curve was drawn


def test_sample_data_and_a_sample_model_made_once(tmp_path):
    (image, meta, kind), (labels, _, lkind) = em_sample()
    assert (kind, lkind) == ("image", "labels") and image.shape == labels.shape == (512, 512)
    run = sample_model(tmp_path, steps=3)
    stamp = (run / "model.safetensors").stat().st_mtime_ns
    t = time.perf_counter()
    assert sample_model(tmp_path, steps=3) == run and (run / "model.safetensors").stat().st_mtime_ns == stamp
    assert time.perf_counter() - t < 1.0  # reused, not trained again


def test_screenshot_of_the_viewer_with_the_result_is_not_blank(make_napari_viewer, qtbot, model_file, tmp_path):
    viewer = make_napari_viewer(show=True)  # a hidden window's canvas renders nothing
    layer = viewer.add_image(em_section(shape=(128, 128))[0], name="em")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment with unetseg")
    widget.image.reset_choices()
    widget.image.value = layer
    _segment(qtbot, widget, model=model_file, output="labels", split="distance")
    shot = viewer.screenshot(path=str(tmp_path / "shot.png"), canvas_only=True)
    assert (tmp_path / "shot.png").stat().st_size > 1000 and shot[..., :3].std() > 5


class _Recording:
    """An array-like that records the largest window read from it."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim, self.largest = array, array.shape, array.dtype, array.ndim, 0

    def __getitem__(self, index):
        out = self.array[index]
        self.largest = max(self.largest, out.size)
        return out


def test_a_lazy_image_is_read_window_by_window_into_an_ome_zarr_pyramid(model_file, tmp_path, monkeypatch):
    from unetseg import normalize

    monkeypatch.setattr(normalize, "_BAND_ELEMENTS", 2**16)  # statistics in bands smaller than this image
    image = em_section(shape=(700, 640))[0]
    lazy = _Recording(image)
    job = seg_module.SegmentJob(model=model_file, data=lazy, tile=64, store=tmp_path / "out.ome.zarr")
    levels = seg_module.run_job(job, seg_module.TileProgress(), {})
    assert lazy.largest < image.size // 2  # never read whole
    assert [lv.shape for lv in levels] == [(700, 640), (350, 320), (175, 160)]
    want = seg_module.run_job(seg_module.SegmentJob(model=model_file, data=image, tile=64), seg_module.TileProgress(), {})
    np.testing.assert_array_equal(np.asarray(levels[0]), want)


def test_a_dask_layer_becomes_a_multiscale_result_layer(make_napari_viewer, qtbot, model_file, tmp_path, monkeypatch):
    import dask.array as da

    monkeypatch.setenv("UNETSEG_CACHE", str(tmp_path / "cache"))
    image = em_section(shape=(300, 280))[0]
    viewer = make_napari_viewer()
    layer = viewer.add_image(da.from_array(image, chunks=(128, 128)), name="big em")
    widget = SegmentWidget(viewer)
    widget.image.reset_choices()
    widget.image.value = layer
    _segment(qtbot, widget, model=model_file, output="mask", tile=36)
    assert widget.last_layer.multiscale and (tmp_path / "cache" / "napari" / "big_em-0.ome.zarr").is_dir()
    want = seg_module.run_job(seg_module.SegmentJob(model=model_file, data=image, output="mask", tile=36),
                              seg_module.TileProgress(), {})
    np.testing.assert_array_equal(np.asarray(widget.last_layer.data[0]), want)


def test_an_empty_model_field_segments_with_the_sample_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from unetseg.napari_plugin import sample

    monkeypatch.setenv("UNETSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sample, "MODEL_STEPS", 3)
    viewer = make_napari_viewer()
    layer = viewer.add_image(em_section(shape=(96, 96))[0], name="em")
    widget = SegmentWidget(viewer)
    widget.image.reset_choices()
    widget.image.value = layer
    assert widget.job().model is None
    _segment(qtbot, widget)
    assert widget.last_layer is not None and (tmp_path / "cache" / "napari-sample-model" / "run" / "model.safetensors").is_file()
