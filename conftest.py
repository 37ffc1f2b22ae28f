"""Collection rules for the doctests under src/: the napari plugin's modules import napari,
which only the ``napari`` extra installs (``make test`` does)."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("napari") else ["src/unetseg/napari_plugin/*"]
