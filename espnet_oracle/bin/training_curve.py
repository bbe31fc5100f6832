"""Write ``cer_curve.tsv`` (dev CER, losses and cumulative training time per epoch) of an ESPnet training.
Why it exists: time-to-accuracy needs dev CER per epoch with cumulative time, kept only in ESPnet's reporter state.

Read from the reporter state in ``<exp_dir>/checkpoint.pth``, not train.log: it survives a resume, so an
interrupted run gets one complete curve. ``wall_seconds`` sums the measured ``time`` of each epoch's phases
(training, validation, plotting): no start-up, checkpoint writing or time between interruption and resume.
"""

import argparse
import math
import sys
from pathlib import Path

from espnet_oracle.utils.datadir import atomic_write_text

COLUMNS = ("epoch", "dev_cer", "dev_loss", "train_loss", "wall_seconds")


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else _float(value)


def curve_from_reporter(state: dict):
    """Rows (dicts with COLUMNS) from an ESPnet ``Reporter.state_dict()``."""
    stats = state.get("stats") or {}
    epochs = sorted(int(e) for e in stats)
    if not epochs:
        raise ValueError("the reporter holds no finished epoch")
    if epochs != list(range(1, epochs[-1] + 1)):
        raise ValueError(f"the reporter misses epochs: has {epochs}")
    rows, wall = [], 0.0
    for epoch in epochs:
        phases = stats[epoch]
        wall += sum(_seconds(p["time"]) for p in phases.values() if isinstance(p, dict) and "time" in p)
        train, valid = phases.get("train", {}), phases.get("valid", {})
        rows.append(dict(epoch=epoch, dev_cer=100.0 * _float(valid.get("cer_ctc")),
                         dev_loss=_float(valid.get("loss")), train_loss=_float(train.get("loss")),
                         wall_seconds=wall))
    return rows


def reporter_state(path: Path) -> dict:
    """The reporter state (per-epoch stats) in an ESPnet training ``checkpoint.pth``."""
    import torch

    # ESPnet's own checkpoint of this run (it holds datetime.timedelta values, hence no weights_only)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "reporter" not in checkpoint:
        raise ValueError(f"{path} has no reporter state (not an ESPnet training checkpoint?)")
    return checkpoint["reporter"]


def read_curve_from_checkpoint(path: Path):
    return curve_from_reporter(reporter_state(path))


def format_curve(rows) -> str:
    lines = [f"{r['epoch']}\t{r['dev_cer']:.3f}\t{r['dev_loss']:.4f}\t{r['train_loss']:.4f}\t"
             f"{r['wall_seconds']:.1f}" for r in rows]
    return "\n".join(["\t".join(COLUMNS), *lines]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True, help="ESPnet output dir holding checkpoint.pth")
    args = parser.parse_args(argv)
    exp_dir = Path(args.exp_dir)
    checkpoint = exp_dir / "checkpoint.pth"
    if not checkpoint.exists():
        sys.exit(f"training_curve: {checkpoint} not found (did the training finish an epoch?)")
    try:
        rows = read_curve_from_checkpoint(checkpoint)
    except ValueError as e:
        sys.exit(f"training_curve: {checkpoint}: {e}")
    atomic_write_text(exp_dir / "cer_curve.tsv", format_curve(rows))
    print(f"training_curve: {len(rows)} epochs -> {exp_dir / 'cer_curve.tsv'}")


if __name__ == "__main__":
    main()
