"""Write ``cer_curve.tsv`` (dev CER, losses and cumulative training time per epoch) of an ESPnet training.
Why it exists: time-to-accuracy needs dev CER per epoch with cumulative time, kept only in ESPnet's reporter state.

The numbers come from ESPnet's own reporter state in ``<exp_dir>/checkpoint.pth``
(key ``reporter``: per epoch and phase the averaged statistics plus the measured
``time`` of the phase), not from parsing ``train.log``. The reporter state
survives a resumed training, so an interrupted and resumed run gets a
complete curve; a training log may hold several attempts.

``wall_seconds`` is cumulative over epochs: the measured time of each epoch's
training, validation (and attention plotting, if any) phases. It leaves out
start-up (imports, model building), checkpoint writing and any time between
an interruption and the resume, so it does not depend on how often a run was
interrupted.
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
        cer = _float(valid.get("cer_ctc"))
        rows.append(
            dict(
                epoch=epoch,
                dev_cer=100.0 * cer,
                dev_loss=_float(valid.get("loss")),
                train_loss=_float(train.get("loss")),
                wall_seconds=wall,
            )
        )
    return rows


def read_curve_from_checkpoint(path: Path):
    import torch

    # ESPnet's own checkpoint of this run (it holds datetime.timedelta values, hence no weights_only)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if "reporter" not in checkpoint:
        raise ValueError(f"{path} has no reporter state (not an ESPnet training checkpoint?)")
    return curve_from_reporter(checkpoint["reporter"])


def format_curve(rows) -> str:
    lines = ["\t".join(COLUMNS)]
    for row in rows:
        lines.append(
            f"{row['epoch']}\t{row['dev_cer']:.3f}\t{row['dev_loss']:.4f}\t"
            f"{row['train_loss']:.4f}\t{row['wall_seconds']:.1f}"
        )
    return "\n".join(lines) + "\n"


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
