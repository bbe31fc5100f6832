#!/usr/bin/env python3
"""Time one training step (forward + backward + Adam) of the recipe's configs on this CPU.

Usage (from the recipe dir, environment activated)::

    python local/step_time.py                       # conf/train_*.yaml, batch 32, widths 80-120
    python local/step_time.py --min_width 100 --max_width 160 --threads 2

Builds each model through ``OracleASRTask`` (``encoder: crnn`` registered), feeds a
random batch of ``--batch_size`` column-feature images of random widths with
random labels of about one character per 12 columns, and prints the median step
time over ``--steps`` steps after ``--warmup`` steps.
"""

from __future__ import annotations

import argparse
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("train_teacher_conventional.yaml", "train_teacher_oracle.yaml", "train_student.yaml")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conf_dir", default=str(Path(__file__).resolve().parents[1] / "conf"))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS))
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--min_width", type=int, default=80)
    p.add_argument("--max_width", type=int, default=120)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from espnet_oracle.asr.encoder.crnn_encoder import register
    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    register()
    tokens = ["<blank>", "<unk>"] + list(string.digits + string.ascii_lowercase) + ["<sos/eos>"]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "tokens.txt").write_text("\n".join(tokens) + "\n")
    g = torch.Generator().manual_seed(0)
    for conf in args.configs:
        parser = OracleASRTask.get_parser()
        targs = parser.parse_args([
            "--config", str(Path(args.conf_dir) / conf), "--token_list", str(tmp / "tokens.txt"),
            "--normalize", "utterance_mvn", "--output_dir", str(tmp / "out"),
        ])
        model = OracleASRTask.build_model(targs)
        model.train()
        params = sum(p.numel() for p in model.parameters())
        optim = torch.optim.Adam(model.parameters(), lr=1e-3)
        times = []
        for step in range(args.warmup + args.steps):
            widths = torch.randint(args.min_width, args.max_width + 1, (args.batch_size,), generator=g)
            widths, _ = widths.sort(descending=True)
            speech = torch.rand(args.batch_size, int(widths.max()), targs.input_size, generator=g)
            lens = (widths // 12).clamp(min=1)
            text = torch.full((args.batch_size, int(lens.max())), -1, dtype=torch.long)
            for i, n in enumerate(lens.tolist()):
                text[i, :n] = torch.randint(2, len(tokens) - 1, (n,), generator=g)
            t0 = time.perf_counter()
            loss, _, _ = model(speech=speech, speech_lengths=widths, text=text, text_lengths=lens)
            optim.zero_grad()
            loss.backward()
            optim.step()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
        print(f"{conf}: {params / 1e6:.3f} M parameters, median step {statistics.median(times) * 1000:.0f} ms "
              f"(batch {args.batch_size}, widths {args.min_width}-{args.max_width}, {args.threads} thread(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
