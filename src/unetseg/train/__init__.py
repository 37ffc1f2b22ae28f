"""Training: configs, optimisers and schedules, checkpoints, the step loop, DDP, plots.

Typical use (what ``unetseg train`` does)::

    cfg = load_train_config("configs/isbi2012-cpu.yaml", ["optim.lr=0.5"])
    result = fit(cfg, model, train_set, "runs/isbi", val_set=val_items, card=card)
"""

from .averaging import AveragingConfig, WeightAverage
from .batchnorm import BatchNormConfig, recompute_statistics
from .checkpoint import CheckpointConfig, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .config import ModelConfig, RuntimeConfig, TrainConfig, ValidationConfig, load_train_config
from .loop import StepBatchSampler, TrainResult, fit, seed_model_init, step_seed
from .optim import OptimConfig, ScheduleConfig, build_optimizer, lr_at, lr_factor

__all__ = [
    "AveragingConfig",
    "BatchNormConfig",
    "CheckpointConfig",
    "ModelConfig",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "StepBatchSampler",
    "TrainConfig",
    "TrainResult",
    "ValidationConfig",
    "WeightAverage",
    "build_optimizer",
    "fit",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_train_config",
    "lr_at",
    "lr_factor",
    "recompute_statistics",
    "save_checkpoint",
    "seed_model_init",
    "step_seed",
]
