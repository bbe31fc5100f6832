"""Decide what to do with a model dir before training (run.sh's ``train_model``).
Why it exists: ESPnet resumes a dir but never checks that it was trained with the same config and inputs.

    python -m espnet_oracle.bin.train_dir --dir exp/NAME --config CONF -- ESPNET_OPTIONS...

Prints one word on stdout:

- ``done``: the dir holds a finished training made with exactly this config,
  these options and these inputs (see :mod:`espnet_oracle.utils.stamps`);
- ``resume``: an unfinished training made the same way; ESPnet resumes it
  from ``checkpoint.pth``;
- ``train``: nothing usable; the dir is (re)created with a new ``stamp.json``.

A dir made any other way (or without a stamp) is never reused: it is moved
aside to ``<dir>.stale-<time>`` and the reason is printed on stderr.
"""

import argparse
import sys
from pathlib import Path

from espnet_oracle.utils.stamps import TRAIN_STAMP, differences, move_aside, read_stamp, train_stamp, write_stamp


def prepare(directory: Path, config: str, options) -> str:
    stamp = train_stamp(config, options)
    if directory.is_dir() and not directory.is_symlink() and not any(directory.iterdir()):
        directory.rmdir()  # an empty dir holds no work
    if directory.exists() or directory.is_symlink():
        reasons = differences(read_stamp(directory / TRAIN_STAMP), stamp)
        if not reasons:
            if (directory / ".done").exists():
                return "done"
            return "resume" if (directory / "checkpoint.pth").exists() else "train"
        moved = move_aside(directory)
        print(
            f"train_dir: {directory} was made differently: {'; '.join(reasons)}.\n"
            f"train_dir: moved it aside to {moved} (nothing deleted); training {directory} anew",
            file=sys.stderr,
        )
    directory.mkdir(parents=True)
    write_stamp(directory / TRAIN_STAMP, stamp)
    return "train"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--config", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        parser.error("give the ESPnet training options after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    options = argv[split + 1:]
    if not Path(args.config).is_file():
        sys.exit(f"train_dir: config {args.config} not found")
    print(prepare(Path(args.dir), args.config, options))


if __name__ == "__main__":
    main()
