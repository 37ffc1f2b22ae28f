"""The README's picture of the napari plugin: the "Segment with unetseg" widget docked beside the
synthetic EM sample, segmented into instances by the sample model (trained on first use).

    tools/headless.sh .venv/bin/python docs/napari_screenshot.py [--out docs/images/napari-segment.png]

Needs the ``napari`` extra and a display (``tools/headless.sh`` starts Xvfb).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

from unetseg.napari_plugin.sample import em_sample, sample_model
from unetseg.napari_plugin.segment import SegmentWidget


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("images") / "napari-segment.png")
    args = ap.parse_args(argv)
    model = sample_model()
    viewer = napari.Viewer(show=True, title="unetseg in napari")
    viewer.window._qt_window.resize(1400, 820)
    (image, meta, _), _ = em_sample()
    layer = viewer.add_image(image, **meta)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment with unetseg", area="right")
    widget.image.reset_choices()
    widget.image.value, widget.model.value, widget.output.value, widget.tta.value = layer, model, "labels", True
    worker = widget.start()
    while worker.is_running or not widget.run_button.enabled:
        QApplication.processEvents()
        time.sleep(0.05)
    widget.last_layer.opacity = 0.45
    for _ in range(20):
        QApplication.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    shot = viewer.window.screenshot(flash=False, canvas_only=False)
    # A 256-colour palette keeps the README's picture small (the pixels are flat UI colours and labels).
    Image.fromarray(shot[..., :3]).quantize(colors=256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({widget.status.value}; model {model})")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
