"""The U-Net model family: the paper's U-Net (and its variants) and FusionNet.

Models import only torch and return logits. ``save``/``load`` write and read safetensors plus a
JSON config holding the :class:`ModelCard`; loading never unpickles.
"""

from .card import ModelCard, Postprocess, TrainingInfo, card_from_dict, card_to_dict
from .files import ARCHITECTURES, build, load, load_card, load_with_config, model_file, read_config, save, with_state
from .flops import count_conv_layers, flops_per_output_pixel, model_flops, parameter_count
from .fusionnet import FusionNet
from .unet import UNet

__all__ = [
    "ARCHITECTURES",
    "FusionNet",
    "ModelCard",
    "Postprocess",
    "TrainingInfo",
    "UNet",
    "build",
    "card_from_dict",
    "card_to_dict",
    "count_conv_layers",
    "flops_per_output_pixel",
    "model_flops",
    "load",
    "load_card",
    "load_with_config",
    "model_file",
    "parameter_count",
    "read_config",
    "save",
    "with_state",
]
