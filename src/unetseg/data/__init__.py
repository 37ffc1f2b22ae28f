"""Datasets: layouts on disk, training targets, the random tile sampler and the training loader.

Modules: ``config`` (the dataclasses), ``layout`` (discovery), ``targets`` (labels to targets),
``dataset`` (loading), ``tiles`` (:class:`TileDataset`), ``loader`` (:func:`train_loader`).

Layouts, discovered from one path (:func:`discover`):

``folders``
    ``images/`` with ``labels/`` (or ``masks/``, ``label/``, ``mask/``, ``gt/``), files matched by
    stem, natural order (ISBI 2012 as shipped here: ``images/00.png`` + ``labels/00.png``).
``ctc``
    The Cell Tracking Challenge: ``NN/tTTT.tif`` with ``NN_GT/SEG/man_segTTT.tif``; only frames
    with a segmentation ground truth are used (DIC-C2DH-HeLa).
``flat``
    Image and label files side by side in one folder, paired by name once the role words are
    removed: ``img2d.tif`` + ``mask2d.tif``, ``train-volume.tif`` + ``train-labels.tif``,
    ``a.tif`` + ``a_mask.tif``. Multi-page stacks (ISBI 2012 original style) become one 2D
    sample per page.
``pair``
    An image file and a label file given explicitly.

Targets (:class:`TargetConfig`): ``binary`` masks (which label value is the foreground is
configurable; ISBI: 255 = cell = class 1, 0 = membrane = class 0), ``multiclass`` masks (label
values listed per class) and ``instances`` (0 = background, other values = object ids) turned
into a background/cell target with separation borders carved between touching objects (paper
Fig. 3c). ``auto`` picks ``instances`` for the CTC layout, ``binary`` when the labels hold at
most one non-zero value and ``instances`` otherwise (logged).

Ignore rule for partial annotations (``TargetConfig.unlabeled``):

* ``"background"`` (default): every unlabelled pixel is background.
* ``"partial"`` (default for the CTC layout): decided per label image from the data: an image
  with far fewer annotated objects than the others (fewer than half the median count,
  :func:`~unetseg.data.targets.partial_frames`) is partial and gets ``"ignore_far"``; the rest
  are complete and get ``"background"``, so far background is learned as background.
* ``"ignore_far"``: unlabelled pixels farther than ``unlabeled_margin`` px from every annotated
  object are masked out of the loss. Near annotated cells (where their outlines and the separation
  borders are) background stays trusted; far away an unlabelled region may be a cell nobody
  annotated (HeLa ``man_seg067`` labels 3 of many visible cells).

In addition a label value can be declared as "not annotated" (``ignore_value``); those pixels
are always ignored.
"""

from .config import DataConfig, TargetConfig, WeightConfig
from .dataset import LabeledData, card_for_target, load_dataset, load_labeled, resolved_target
from .layout import Pair, discover
from .loader import StepBatchSampler, prefetch, train_loader
from .targets import LabeledImage, make_target
from .tiles import TileDataset

__all__ = [
    "DataConfig",
    "LabeledData",
    "LabeledImage",
    "Pair",
    "StepBatchSampler",
    "TargetConfig",
    "TileDataset",
    "WeightConfig",
    "card_for_target",
    "discover",
    "load_dataset",
    "load_labeled",
    "make_target",
    "prefetch",
    "resolved_target",
    "train_loader",
]
