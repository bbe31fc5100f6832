"""Stage 7: store a teacher's CTC frame posteriors for one data set.
Why it exists: ESPnet has no posterior dump, and frame-level KD needs one per teacher.

The Oracle Teacher is fed the true transcript. Output in --out_dir:
``post.scp`` (utterance id -> array in ``data/post.<shard>.ark``), ``meta.json``
(format, k, vocabulary size, teacher, frame shift), ``utt2num_frames`` (T' per
utterance, checked against the student's encoder output during training) and
``stats.json`` (bytes per frame on disk).

Stamped: the set (``meta.json``, ``.done``) and every shard (``data/post.<n>.json``)
record the sha256 of the teacher's model file, the options (format, k) and
fingerprints of the features (feats.scp and the bytes of its ark files) and of
the transcripts. A re-run whose stamp differs says what differs and re-dumps;
``check_posteriors`` refuses posteriors whose features changed since.

Resumable: utterances are written in shards that each become visible only when
complete; a re-run reuses finished shards of the same stamp and the merge is atomic.
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
from espnet_oracle.utils.posteriors import (
    META_NAME,
    PosteriorWriter,
    dump_stamp,
    stamp_differences,
    token_list_sha,
    write_meta,
)

# set-level outputs: removed before any (re-)dump, so a stale set never looks complete
SET_FILES = (".done", "post.scp", META_NAME, "utt2num_frames", "stats.json")


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
        load_model,
        model_file,
    )

    out_dir = Path(args.out_dir)
    done = out_dir / ".done"
    model_path = model_file(Path(args.exp_dir))
    stamp = dump_stamp(model_path, args.feats_dir, args.format, args.topk)
    old_stamp = _read_json(done).get("stamp") if done.exists() else None
    if old_stamp == stamp and (out_dir / "post.scp").exists():
        print(f"dump_posteriors: {out_dir} is up to date")
        return
    previous = _read_json(out_dir / META_NAME).get("stamp") or old_stamp
    if previous is not None and previous != stamp:
        print(f"dump_posteriors: re-dumping {out_dir}, its posteriors were made from other inputs: "
              + "; ".join(stamp_differences(previous, stamp)))
        for path in sorted((out_dir / "data").glob("post.*")):
            path.unlink()
    for name in SET_FILES:
        if (out_dir / name).exists():
            (out_dir / name).unlink()
    started = time.time()
    model, train_args = load_model(Path(args.exp_dir))
    data = FeatureSet(Path(args.feats_dir), train_args)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    shards = [data.utt_ids[i : i + args.shard_size] for i in range(0, len(data.utt_ids), args.shard_size)]
    shift = None
    stale_told = False
    with tqdm(total=len(data.utt_ids), desc=f"dump {out_dir}", unit="utt", file=sys.stderr) as bar:
        for index, shard_ids in enumerate(shards, 1):
            writer = PosteriorWriter(str(out_dir), str(index), fmt=args.format, k=args.topk, stamp=stamp)
            info = writer.read_info()
            if info is not None:
                if info.get("stamp") == stamp and _shard_matches(writer.scp, shard_ids):
                    shift = shift if shift is not None else info.get("frame_shift_ms")
                    bar.update(len(shard_ids))
                    continue
                if info.get("stamp") != stamp and not stale_told:
                    stale_told = True
                    print(f"dump_posteriors: removing stale shards of {out_dir}: "
                          + "; ".join(stamp_differences(info.get("stamp"), stamp)))
            writer.remove()
            shard_shift = None
            for batch in data.batches(args.batch_size, shard_ids):
                utterances = [data.get(u) for u in batch]
                log_probs, lengths, _ = ctc_log_probs(model, utterances)
                for i, utt in enumerate(utterances):
                    length = int(lengths[i])
                    if shard_shift is None:
                        shard_shift = data.frame_shift_ms(utt, length)
                    writer.write(utt.utt_id, log_probs[i, :length].numpy())
                bar.update(len(batch))
            writer.close(info=dict(frame_shift_ms=shard_shift))
            shift = shift if shift is not None else shard_shift
    # Stale shards of an earlier run with other shard sizes would add duplicates.
    expected = {f"post.{i}.scp" for i in range(1, len(shards) + 1)}
    for path in (out_dir / "data").glob("post.*.scp"):
        if path.name not in expected:
            PosteriorWriter(str(out_dir), path.name[len("post."):-len(".scp")]).remove()

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
        teacher_model_file=str(model_path),
        teacher_model=train_args.model,
        feats_dir=str(args.feats_dir),
        frame_shift_ms=shift,
        leftover_mass="exact leftover log-mass stored per frame, spread evenly over the "
        "tokens outside the top k",
        stamp=stamp,
    )
    atomic_write_text(out_dir / "utt2num_frames", "\n".join(frames_lines) + "\n")
    stats = dict(utterances=len(lines), frames=total_frames, bytes=total_bytes,
                 bytes_per_frame=total_bytes / max(total_frames, 1), seconds=time.time() - started)
    atomic_write_text(out_dir / "stats.json", json.dumps(stats, indent=2) + "\n")
    atomic_write_text(out_dir / "post.scp", "\n".join(lines) + "\n")
    atomic_write_text(done, json.dumps(dict(stamp=stamp), indent=2, sort_keys=True) + "\n")
    print(f"dump_posteriors: {len(lines)} utterances, {total_frames} frames, "
          f"{stats['bytes_per_frame']:.1f} bytes/frame -> {out_dir / 'post.scp'}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _shard_matches(scp: Path, shard_ids) -> bool:
    keys = [line.split(maxsplit=1)[0] for line in scp.read_text(encoding="utf-8").splitlines() if line]
    return sorted(keys) == sorted(shard_ids)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
