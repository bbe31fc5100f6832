#!/usr/bin/env python3
"""What stored top-k posteriors cost a KD step at LibriSpeech's vocabulary: dense expansion vs top-k.

Usage::

    python local/kd_topk_bench.py [--vocab 5000 --k 8 --utts 16 --frames 400 --repeats 5] [--device cuda]

Writes a top-k dump of random teacher posteriors (``PosteriorWriter``, as stage 7), reads one
batch of it through ESPnet's dataset + collate with data type ``teacher_posterior`` (expanded to
(B, T', V) by the loader) and ``teacher_topk_posterior`` (kept (B, T', 2k + 2)), and times the
loader and the KD loss forward + backward (``frame_kd_loss`` vs ``frame_kd_loss_topk``) on the
same student logits; checks the two losses agree. A measurement, not a test.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def median_seconds(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=5000)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--utts", type=int, default=16)
    parser.add_argument("--frames", type=int, default=400, help="encoder frames per utterance (16 s at 40 ms)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import espnet_oracle.tasks.oracle_asr  # noqa: F401  (registers the data types)
    from espnet2.train.collate_fn import common_collate_fn
    from espnet2.train.dataset import ESPnetDataset

    from espnet_oracle.asr.kd_loss import frame_kd_loss, frame_kd_loss_topk, unpack_topk_batch
    from espnet_oracle.utils.posteriors import PosteriorWriter, merge_shards

    torch.manual_seed(0)
    utt_ids = [f"utt{i:03d}" for i in range(args.utts)]
    with tempfile.TemporaryDirectory() as tmp:
        writer = PosteriorWriter(tmp, "1", fmt="topk", k=args.k)
        for utt in utt_ids:
            writer.write(utt, torch.log_softmax(torch.randn(args.frames, args.vocab) * 3, -1).numpy())
        writer.close()
        merge_shards(tmp, 1, dict(format="topk", k=args.k, vocab_size=args.vocab, stamp=None))
        scp = str(Path(tmp) / "post.scp")
        result = {"vocab": args.vocab, "k": args.k, "batch": f"{args.utts} x {args.frames} frames",
                  "device": args.device, "torch_threads": torch.get_num_threads()}
        batches = {}
        for form, name, data_type in (("dense", "teacher_post", "teacher_posterior"),
                                      ("topk", "teacher_topk_post", "teacher_topk_posterior")):
            dataset = ESPnetDataset([(scp, name, data_type)])

            def load():
                batches[form] = common_collate_fn([dataset[u] for u in utt_ids])[1]

            result[f"{form}_load_batch_s"] = round(median_seconds(load, args.repeats, "cpu"), 4)
            tensor = batches[form][name]
            result[f"{form}_batch_MB"] = round(tensor.numel() * tensor.element_size() / 1e6, 2)
        lengths = batches["dense"]["teacher_post_lengths"].to(args.device)
        dense = batches["dense"]["teacher_post"].to(args.device)
        ids, values, leftover, _ = unpack_topk_batch(batches["topk"]["teacher_topk_post"].to(args.device))
        logits = torch.randn(args.utts, args.frames, args.vocab, device=args.device, requires_grad=True)
        losses = {}

        def step(form):
            logits.grad = None
            if form == "dense":
                loss = frame_kd_loss(logits, dense, lengths, args.temperature)
            else:
                loss = frame_kd_loss_topk(logits, ids, values, leftover, lengths, args.temperature)
            loss.sum().backward()
            losses[form] = loss.detach()

        for form in ("dense", "topk"):
            step(form)  # warm-up
            result[f"{form}_loss_fwd_bwd_s"] = round(median_seconds(lambda: step(form), args.repeats,
                                                                    args.device), 4)
        difference = (losses["topk"] - losses["dense"]).abs().max() / losses["dense"].abs().max()
        result["max_relative_loss_difference"] = float(f"{float(difference):.2e}")
    print(json.dumps(result, indent=2))
    if difference > 1e-4:
        sys.exit("kd_topk_bench.py: the top-k and dense KD losses differ")
    return result


if __name__ == "__main__":
    main()
