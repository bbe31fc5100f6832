"""Write ``cer_curve.tsv`` (dev CER and cumulative wall-clock time per epoch) from ESPnet's train.log.

Wall-clock time counts from the moment ESPnet starts epoch 1 to the end of each
epoch's validation, so it includes validation and checkpointing but not the
start-up (imports, model building), which is reported separately.
"""

import argparse
import datetime
import re
import sys
from pathlib import Path

from espnet_oracle.utils.datadir import atomic_write_text

TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
STARTED = re.compile(r"INFO: 1/\d+epoch started")
RESULTS = re.compile(r"INFO: (\d+)epoch results: (.*)$")


def _time(line: str) -> datetime.datetime:
    match = TIMESTAMP.search(line)
    if match is None:
        raise ValueError(f"no timestamp in log line: {line[:120]}")
    return datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")


def _stats(section: str) -> dict:
    stats = {}
    for key, value in re.findall(r"([A-Za-z0-9_]+)=([-0-9.e+naif]+)", section):
        try:
            stats[key] = float(value)
        except ValueError:
            pass
    return stats


def parse_train_log(path: Path):
    """Returns (start-up seconds, rows of dicts) from an ESPnet training log."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    first = next((_time(line) for line in lines if TIMESTAMP.search(line)), None)
    started = None
    rows = []
    for line in lines:
        if started is None and STARTED.search(line):
            started = _time(line)
        match = RESULTS.search(line)
        if match and started is not None:
            epoch = int(match.group(1))
            train_part, _, valid_part = match.group(2).partition("[valid]")
            train, valid = _stats(train_part), _stats(valid_part)
            rows.append(
                dict(
                    epoch=epoch,
                    dev_cer=100.0 * valid["cer_ctc"] if "cer_ctc" in valid else float("nan"),
                    dev_loss=valid.get("loss", float("nan")),
                    train_loss=train.get("loss", float("nan")),
                    wall_seconds=(_time(line) - started).total_seconds(),
                )
            )
    if started is None or not rows:
        raise ValueError(f"{path}: no finished epoch found (is this an ESPnet train.log?)")
    startup = (started - first).total_seconds() if first else 0.0
    # A resumed run restarts the clock: keep wall time increasing across restarts.
    offset = 0.0
    for previous, row in zip([None] + rows[:-1], rows):
        if previous is not None and row["wall_seconds"] + offset < previous["wall_seconds"]:
            offset = previous["wall_seconds"]
        row["wall_seconds"] += offset
    return startup, rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp_dir", required=True, help="ESPnet output dir holding train.log")
    parser.add_argument("--log", default=None, help="default: <exp_dir>/train.log")
    args = parser.parse_args(argv)
    exp_dir = Path(args.exp_dir)
    log = Path(args.log) if args.log else exp_dir / "train.log"
    if not log.exists():
        sys.exit(f"training_curve: {log} not found")
    startup, rows = parse_train_log(log)
    lines = ["epoch\tdev_cer\tdev_loss\ttrain_loss\twall_seconds"]
    for row in rows:
        lines.append(
            f"{row['epoch']}\t{row['dev_cer']:.3f}\t{row['dev_loss']:.4f}\t"
            f"{row['train_loss']:.4f}\t{row['wall_seconds']:.1f}"
        )
    atomic_write_text(exp_dir / "cer_curve.tsv", "\n".join(lines) + "\n")
    atomic_write_text(exp_dir / "startup_seconds", f"{startup:.1f}\n")
    print(f"training_curve: {len(rows)} epochs -> {exp_dir / 'cer_curve.tsv'}")


if __name__ == "__main__":
    main()
