"""TensorBoard scalars of a training run (``out_dir/tb/``), beside the authoritative ``log.jsonl``.

``log.jsonl`` is what tests and scripts read; TensorBoard is for watching a run. Both receive
the same records at the same steps, so the curves show exactly what the log holds. A resumed
run opens its writer with ``purge_step`` = first step it will redo, which makes TensorBoard drop
the killed run's events past the checkpoint instead of drawing them twice.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

TB_DIR = "tb"


class TensorBoardLog:
    """Writes one training record per logged step as scalars; a no-op when disabled.

    Args:
        log_dir: event-file folder (``out_dir/tb``).
        enabled: False on non-main processes.
        purge_step: on resume, the first step that will be logged again (events of earlier
            runs at this step or later are discarded by TensorBoard).
    """

    def __init__(self, log_dir: str | Path, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # tensorboard is a dependency; a broken install must not stop training
            log.warning("TensorBoard logging off (%s); pip install tensorboard to get out_dir/tb/", e)
            return
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, record: dict) -> None:
        """Scalars ``train/loss``, ``train/grad_norm``, ``train/tokens_per_s``, ``lr/<group>``."""
        if self.writer is None:
            return
        step = record["step"]
        for key in ("loss", "grad_norm", "tokens_per_s"):
            if record[key] is not None:  # DeepSpeed may not report a gradient norm
                self.writer.add_scalar(f"train/{key}", record[key], step)
        for group, lr in record["lr"].items():
            self.writer.add_scalar(f"lr/{group}", lr, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
