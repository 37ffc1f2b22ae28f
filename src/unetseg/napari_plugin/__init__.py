"""unetseg in napari: the npe2 plugin ``unetseg`` (``pip install 'unetseg[napari]'``).

- :class:`~unetseg.napari_plugin.segment.SegmentWidget` ("Segment with unetseg"): a run folder,
  model file or bioimage.io zip applied to an Image layer in a background thread, with progress
  and Cancel; probabilities as an Image layer, masks and instances as Labels;
- :class:`~unetseg.napari_plugin.train.TrainWidget` ("Train a unetseg model"): a recipe trained
  on an Image layer and a painted Labels layer in the background, the loss curve drawn while it
  runs, stop and resume as ``unetseg train --resume``, the prediction added when done;
- :func:`~unetseg.napari_plugin.sample.em_sample`: a synthetic EM section with its labels, and
  :func:`~unetseg.napari_plugin.sample.sample_model`: a small model trained on first use.

The manifest is ``napari.yaml`` beside this file, registered by the ``napari.manifest`` entry
point. Nothing here is imported by the rest of unetseg.
"""
