"""Per-epoch training log: values (saved in checkpoints), text log file and progress.png."""
from __future__ import annotations

import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from diffoseg_auto.io.checkpoint_io import epoch_durations
from diffoseg_auto.utilities.command_runner import EPOCH_LOGGER
from diffoseg_auto.utilities.file_ops import atomic_write


class _StdoutHandler(logging.StreamHandler):
    """Writes to the current sys.stdout (looked up per message, so redirection and capture work)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


# The epoch lines are training's console output (as nnU-Net prints them): this logger writes them to
# stdout even when no logging is configured, and the command line's -q (WARNING) silences them.
epoch_logger = logging.getLogger(EPOCH_LOGGER)
epoch_logger.setLevel(logging.INFO)
epoch_logger.propagate = False
if not epoch_logger.handlers:
    epoch_logger.addHandler(_StdoutHandler())

KEYS = ("train_losses", "val_losses", "ema_val_losses", "lrs", "epoch_start_timestamps", "epoch_end_timestamps")


def final_metrics_title(metrics: dict) -> str:
    """progress.png's title line for the end-of-stage validation metrics (those present, in a fixed order)."""
    shown = [k for k in ("GED", "Dice_soft", "Dice_match", "Dice_max", "Dice_rater_strict")
             if metrics.get(k) is not None]
    return "end-of-stage validation: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in shown)


class TrainingLogger:
    """Holds one list per key; ``ema_val_losses`` is the smoothed validation loss that selects the best checkpoint."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing = smoothing
        self.values: dict[str, list] = {k: [] for k in KEYS}
        self.log_file: Path | None = None

    # -- values
    def log(self, key: str, value: float, epoch: int) -> None:
        lst = self.values[key]
        if len(lst) > epoch:
            lst[epoch] = value
        else:
            while len(lst) < epoch:  # never happens in normal use; keeps lists aligned after a resume
                lst.append(float("nan"))
            lst.append(value)
        if key == "val_losses":
            prev = self.values["ema_val_losses"][epoch - 1] if epoch > 0 and self.values["ema_val_losses"] else value
            self.log("ema_val_losses", self.smoothing * prev + (1 - self.smoothing) * value, epoch)

    def state(self) -> dict:
        return {k: list(v) for k, v in self.values.items()}

    def load_state(self, state: dict, num_epochs_done: int) -> None:
        self.values = {k: list(state.get(k, []))[:num_epochs_done] for k in KEYS}

    # -- text
    def open(self, folder: Path) -> Path:
        stamp = datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
        self.log_file = Path(folder) / f"training_log_{stamp}.txt"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        return self.log_file

    def print(self, *args) -> None:
        """A time-stamped line on the console (epoch logger) and in the training log file."""
        msg = " ".join(str(a) for a in args)
        line = f"{datetime.now():%Y-%m-%d %H:%M:%S}: {msg}"
        epoch_logger.info(line)
        if self.log_file is not None:
            with open(self.log_file, "a") as fh:
                fh.write(line + "\n")

    def epoch_line(self, epoch: int, num_epochs: int) -> str:
        v = self.values
        durations = epoch_durations(v)
        dur, recent = durations[epoch], durations[-5:]
        eta = (num_epochs - epoch - 1) * (sum(recent) / max(len(recent), 1))
        return (f"epoch {epoch + 1}/{num_epochs}  train_loss {v['train_losses'][epoch]:.4f}  "
                f"val_loss {v['val_losses'][epoch]:.4f} (ema {v['ema_val_losses'][epoch]:.4f})  "
                f"lr {v['lrs'][epoch]:.2e}  time {dur:.1f}s  ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")

    # -- plot
    def plot(self, path: Path, final_metrics: dict | None = None) -> None:
        """Losses, epoch time and learning rate; ``final_metrics`` (end-of-stage validation) go in the title."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        v = self.values
        n = len(v["train_losses"])
        x = list(range(1, n + 1))
        fig, ax = plt.subplots(3, 1, figsize=(8, 10))
        ax[0].plot(x, v["train_losses"], label="train loss")
        ax[0].plot(x[:len(v["val_losses"])], v["val_losses"], label="val loss")
        ax[0].plot(x[:len(v["ema_val_losses"])], v["ema_val_losses"], label="val loss (EMA, selects best)")
        ax[0].set_ylabel("diffusion loss")
        ax[0].legend()
        if final_metrics:
            ax[0].set_title(final_metrics_title(final_metrics), fontsize=9)
        times = epoch_durations(v)
        ax[1].plot(x[:len(times)], times)
        ax[1].set_ylabel("epoch time [s]")
        ax[2].plot(x[:len(v["lrs"])], v["lrs"])
        ax[2].set_ylabel("learning rate")
        ax[2].set_xlabel("epoch")
        fig.tight_layout()
        atomic_write(path, lambda p: fig.savefig(p, format="png"))
        plt.close(fig)

