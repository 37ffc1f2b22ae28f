"""``unetseg train``: train a U-Net from a YAML recipe into a run folder (also under torchrun)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe (resumable; torchrun for several processes)",
        description=(
            "Train from CONFIG.yaml into RUN_DIR (model.safetensors, config.yaml, metrics.jsonl, "
            "checkpoints/, loss.png, val/*.png). Ctrl-C or SIGTERM writes a checkpoint; "
            "--resume RUN_DIR continues exactly. Several processes: "
            "torchrun --nproc_per_node=N -m unetseg train ..."
        ),
    )
    p.add_argument("--config", help="training recipe (YAML); with --resume the run's config.yaml is used when omitted")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value, e.g. --set optim.lr=0.5 (repeatable)")
    p.add_argument("--out", help="run folder to create (required unless --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="overrides runtime.device")
    p.add_argument("--minutes", type=float, default=None, help="stop (checkpoint + final validation) after this much wall-clock time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or periodic lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import distributed as dist_util
    from ..train import latest_checkpoint
    from ..train.config import load_train_config
    from ..train.setup import train_from_config

    if args.resume:
        run_dir = Path(args.resume)
        if args.out and Path(args.out).resolve() != run_dir.resolve():
            raise ConfigError("--out and --resume name different folders; --resume continues in place")
        config_path = Path(args.config) if args.config else run_dir / "config.yaml"
        if not config_path.is_file():
            raise ConfigError(f"{config_path}: no config to resume with (give --config)")
    else:
        if not args.config or not args.out:
            raise ConfigError("train needs --config CONFIG.yaml and --out RUN_DIR (or --resume RUN_DIR)")
        run_dir = Path(args.out)
        config_path = Path(args.config)
        held = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
        # torchrun --max-restarts runs the same command again after a rank died: continue, not restart
        args.resume = str(run_dir) if held and dist_util.restarted_by_torchrun() and latest_checkpoint(run_dir / "checkpoints") else None
        if held and not args.resume:
            raise ConfigError(f"{run_dir}: already holds a training run; use --resume {run_dir} or another --out")
    cfg = load_train_config(config_path, args.overrides)
    result = train_from_config(
        cfg,
        run_dir,
        config_path=config_path,
        resume=bool(args.resume),
        device=args.device,
        progress=not args.no_progress,
        time_limit_s=args.minutes * 60 if args.minutes else None,
    )
    info = dist_util.from_env()
    if info.is_main:
        best = f", best {cfg.validation.metric} {result.best_metric:.4f} at step {result.best_step}" if result.best_metric is not None else ""
        print(f"{result.status} at step {result.step} ({result.steps_per_s:.2f} steps/s){best}; run folder: {run_dir}", file=sys.stderr)
    dist_util.shutdown(info)
    if result.status == "interrupted":
        return 128 + int(result.signal or signal.SIGINT)
    return 0
