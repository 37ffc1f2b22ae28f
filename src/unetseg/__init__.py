"""unetseg: the U-Net of Ronneberger, Fischer and Brox (MICCAI 2015) for microscopy.

Train on a few annotated images with the paper's recipe, segment images of any size with
the overlap-tile strategy, and evaluate with the metrics of the ISBI 2012 and Cell Tracking
challenges.
"""

__version__ = "0.1.0"
