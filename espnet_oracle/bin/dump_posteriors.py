"""Stage 7: store a teacher's CTC frame posteriors for one data set.

The Oracle Teacher is fed the true transcript. Output in --out_dir:
``post.scp`` (utterance id -> array in ``data/post.<shard>.ark``), ``meta.json``
(format, k, vocabulary size, teacher, frame shift), ``utt2num_frames`` (T' per
utterance, checked against the student's encoder output during training) and
``stats.json`` (bytes per frame on disk).

Resumable: utterances are written in shards that each become visible only when
complete; a re-run skips finished shards and the merge is atomic.
See ``espnet_oracle/utils/posteriors.py`` for the storage format.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from espnet_oracle.utils.datadir import atomic_write_text
from espnet_oracle.utils.posteriors import PosteriorWriter, token_list_sha, write_meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp_dir", required=True, help="trained teacher (config.yaml + valid.loss.ave.pth)")
    parser.add_argument("--feats_dir", required=True, help="dump dir of the set, e.g. dump/fbank/train")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--format", choices=("topk", "dense"), default="topk")
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--shard_size", type=int, default=200, help="utterances per shard")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--nj", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, args.nj))

    from espnet_oracle.utils.inference import (
        FeatureSet,
        ctc_log_probs,
        frame_shift_ms,
        load_model,
        model_file,
    )

    out_dir = Path(args.out_dir)
    done = out_dir / ".done"
    options = json.dumps(dict(format=args.format, topk=args.topk, exp_dir=str(args.exp_dir),
                              feats_dir=str(args.feats_dir)), sort_keys=True)
    model_path = model_file(Path(args.exp_dir))
    if done.exists() and done.read_text() == options \
            and done.stat().st_mtime >= model_path.stat().st_mtime:
        print(f"dump_posteriors: {out_dir} is up to date")
        return
    started = time.time()
    model, train_args = load_model(Path(args.exp_dir))
    data = FeatureSet(Path(args.feats_dir), train_args)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    if done.exists():
        done.unlink()
    shards = [data.utt_ids[i : i + args.shard_size] for i in range(0, len(data.utt_ids), args.shard_size)]
    shift = None
    with tqdm(total=len(data.utt_ids), desc=f"dump {out_dir}", unit="utt", file=sys.stderr) as bar:
        for index, shard_ids in enumerate(shards, 1):
            writer = PosteriorWriter(str(out_dir), str(index), fmt=args.format, k=args.topk)
            if writer.scp.exists() and writer.num_frames.exists() and _shard_matches(writer.scp, shard_ids):
                bar.update(len(shard_ids))
                continue
            for batch in data.batches(args.batch_size, shard_ids):
                utterances = [data.get(u) for u in batch]
                log_probs, lengths, _ = ctc_log_probs(model, utterances)
                for i, utt in enumerate(utterances):
                    length = int(lengths[i])
                    if shift is None:
                        shift = frame_shift_ms(utt.feats.shape[0], length)
                    writer.write(utt.utt_id, log_probs[i, :length].numpy())
                bar.update(len(batch))
            writer.close()
    # Stale shards of an earlier run with other shard sizes would add duplicates.
    expected = {f"post.{i}.scp" for i in range(1, len(shards) + 1)}
    for path in (out_dir / "data").glob("post.*.scp"):
        if path.name not in expected:
            path.unlink()
            for suffix in (".ark", ".num_frames"):
                stale = path.with_suffix(suffix)
                if stale.exists():
                    stale.unlink()

    lines, frames_lines, total_bytes = [], [], 0
    for index in range(1, len(shards) + 1):
        shard = out_dir / "data" / f"post.{index}"
        lines.extend(Path(f"{shard}.scp").read_text(encoding="utf-8").splitlines())
        frames_lines.extend(Path(f"{shard}.num_frames").read_text(encoding="utf-8").splitlines())
        total_bytes += Path(f"{shard}.ark").stat().st_size
    total_frames = sum(int(line.split()[1]) for line in frames_lines)
    lines.sort()
    frames_lines.sort()
    ids = [line.split(maxsplit=1)[0] for line in lines]
    if ids != sorted(data.utt_ids):
        missing = sorted(set(data.utt_ids) - set(ids))[:5]
        sys.exit(f"dump_posteriors: {out_dir} does not cover {args.feats_dir}: e.g. {missing}")
    write_meta(
        str(out_dir),
        format=args.format,
        k=args.topk if args.format == "topk" else None,
        vocab_size=len(model.token_list),
        token_list_sha=token_list_sha(model.token_list),
        teacher=str(args.exp_dir),
        teacher_model=train_args.model,
        frame_shift_ms=shift,
        leftover_mass="spread evenly over the tokens outside the top k",
    )
    atomic_write_text(out_dir / "utt2num_frames", "\n".join(frames_lines) + "\n")
    stats = dict(utterances=len(lines), frames=total_frames, bytes=total_bytes,
                 bytes_per_frame=total_bytes / max(total_frames, 1), seconds=time.time() - started)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(out_dir / "post.scp", "\n".join(lines) + "\n")
    atomic_write_text(done, options)
    print(f"dump_posteriors: {len(lines)} utterances, {total_frames} frames, "
          f"{stats['bytes_per_frame']:.1f} bytes/frame -> {out_dir / 'post.scp'}")


def _shard_matches(scp: Path, shard_ids) -> bool:
    keys = [line.split(maxsplit=1)[0] for line in scp.read_text(encoding="utf-8").splitlines() if line]
    return sorted(keys) == sorted(shard_ids)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
