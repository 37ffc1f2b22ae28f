"""Training progress: a tqdm bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("unetseg.train")


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Report ``update(step, loss, lr)`` calls.

    ``enabled=False`` (library default) logs nothing but the periodic lines at DEBUG level; the
    CLI passes ``enabled=True``: a tqdm bar when stderr is a terminal, otherwise an INFO line
    every ``every_s`` seconds with loss, steps/s and ETA. ``time_left_s`` is the training time
    left when the object is created (a run with a time limit); the ETA is then the earlier of
    the last step and the end of that time, and the bar counts steps without a total.
    """

    def __init__(self, total: int, start: int = 0, *, enabled: bool = False, every_s: float = 30.0, stream=None,
                 time_left_s: float | None = None):
        self.total = total
        self.start = start
        self.every_s = every_s
        self.enabled = enabled
        self.time_left_s = time_left_s
        self.t0 = time.perf_counter()
        self.last_print = self.t0
        self.stream = stream or sys.stderr
        self.bar = None
        if enabled and hasattr(self.stream, "isatty") and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=None if time_left_s is not None else total, initial=start, file=self.stream, unit="step",
                            dynamic_ncols=True)

    def rate(self, step: int) -> float:
        """Steps per second since this object was created."""
        dt = time.perf_counter() - self.t0
        return (step - self.start) / dt if dt > 0 else 0.0

    def eta(self, step: int) -> float:
        """Seconds until the last step or, with a time limit, the end of the time if that comes first.

        >>> Progress(100, time_left_s=0.0).eta(0)
        0.0
        """
        rate = self.rate(step)
        by_steps = (self.total - step) / rate if rate > 0 else float("inf")
        if self.time_left_s is None:
            return by_steps
        return min(by_steps, max(0.0, self.time_left_s - (time.perf_counter() - self.t0)))

    def update(self, step: int, loss: float, lr: float) -> None:
        """``step`` steps are done; the latest loss was ``loss``."""
        rate = self.rate(step)
        eta = self.eta(step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            left = {} if self.time_left_s is None else {"left": _fmt_eta(eta)}
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", **left, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_print >= self.every_s or step == self.total:
            self.last_print = now
            eta_s = _fmt_eta(eta) if eta != float("inf") else "?"
            level = logging.INFO if self.enabled else logging.DEBUG
            # Under a time limit the step count is a far ceiling: show the step alone, as the bar does.
            done = f"{step}" if self.time_left_s is not None else f"{step}/{self.total}"
            log.log(level, "step %s  loss %.4f  lr %.2e  %.2f steps/s  ETA %s", done, loss, lr, rate, eta_s)

    def message(self, text: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        elif self.enabled:
            log.info("%s", text)
        else:
            log.debug("%s", text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
