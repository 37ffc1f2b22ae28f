"""The MONAI baseline the quality issue defines, shared by the side-by-side benchmarks.

``BasicUNet(features=(32, 32, 64, 128, 256, 32))``, Adam 1e-3, ``DiceCELoss`` on two classes,
random 256 x 256 crops in batches of 4 with flips and 90-degree rotations, autocast in the
precision given (bf16 where the CPU has it), trained for ``args.minutes`` of wall-clock time;
prediction with ``sliding_window_inference`` (roi 256, overlap 0.25, Gaussian) averaged over
the same 8 rotations/flips as unetseg's TTA. Items are ``unetseg.data.LabeledImage``-like:
``image`` ``(1, Y, X)`` normalised, ``target`` with 0 = class 0. Needs the ``bench`` extra.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from unetseg import runtime  # noqa: E402
from unetseg.predict import dihedral_transforms  # noqa: E402

CROP, BATCH = 256, 4


def _memory_format(precision: str) -> torch.memory_format:
    # the format that is faster for training, by unetseg's rule: channels-last under bf16 autocast;
    # contiguous in fp32, where channels-last slows backward convolutions on CPUs without bf16
    cpu = torch.device("cpu")
    return torch.channels_last if runtime.training_channels_last("auto", cpu, precision) else torch.contiguous_format


def _sampler(train_items, rng: np.random.Generator, fmt: torch.memory_format):
    images = [it.image[0] for it in train_items]
    labels = [(np.asarray(it.target) > 0).astype(np.int64) for it in train_items]

    def sample():
        xs, ys = [], []
        for _ in range(BATCH):
            i = int(rng.integers(len(images)))
            h, w = images[i].shape
            y0, x0 = int(rng.integers(0, h - CROP + 1)), int(rng.integers(0, w - CROP + 1))
            x, y = images[i][y0 : y0 + CROP, x0 : x0 + CROP], labels[i][y0 : y0 + CROP, x0 : x0 + CROP]
            k = int(rng.integers(4))
            x, y = np.rot90(x, k), np.rot90(y, k)
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return torch.from_numpy(np.stack(xs)[:, None]).contiguous(memory_format=fmt), torch.from_numpy(np.stack(ys)[:, None])

    return sample


def train_monai(args, train_items):
    """(model in eval mode, training seconds, steps): ``args.seed``, ``args.minutes``, ``args.monai_precision``."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet

    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    precision, device = args.monai_precision, torch.device("cpu")
    fmt = _memory_format(precision)
    model = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(32, 32, 64, 128, 256, 32)).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    sample = _sampler(train_items, rng, fmt)
    t0, step, losses = time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - t0 < args.minutes * 60:
        x, y = sample()
        with runtime.autocast(device, precision):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        if step % 25 == 0:
            el = time.perf_counter() - t0
            print(f"[monai] step {step} loss {np.mean(losses[-25:]):.4f} {step / el:.3f} steps/s {el / 60:.1f} min", flush=True)
    return model.eval(), time.perf_counter() - t0, step


def predict_monai(model, items, precision: str) -> list[np.ndarray]:
    """Class-1 probability map of each item: sliding window (0.25, Gaussian) under 8-fold TTA."""
    from monai.inferers import sliding_window_inference

    fmt, device = _memory_format(precision), torch.device("cpu")

    def predictor(t):
        with runtime.autocast(device, precision):
            return model(t.contiguous(memory_format=fmt)).float()

    probs = []
    with torch.no_grad():
        for it in items:
            acc = None
            x = torch.from_numpy(np.ascontiguousarray(it.image[0]))[None, None]
            for k, flip in dihedral_transforms(2):  # the same 8 transforms as unetseg's TTA
                t = torch.flip(x, dims=(-1,)) if flip else x
                t = torch.rot90(t, k, dims=(-2, -1)).contiguous()
                p = torch.softmax(sliding_window_inference(t, (CROP, CROP), BATCH, predictor, overlap=0.25, mode="gaussian"), 1)[:, 1:]
                p = torch.rot90(p, -k, dims=(-2, -1))
                p = (torch.flip(p, dims=(-1,)) if flip else p)[0, 0].numpy()
                acc = p if acc is None else acc + p
            probs.append(acc / 8)
    return probs
