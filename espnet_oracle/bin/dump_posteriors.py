"""Stage 7: store a teacher's CTC frame posteriors for one or more data sets.
Why it exists: ESPnet has no posterior dump, and frame-level KD needs one per teacher.

The Oracle Teacher is fed the true transcript. Output in --out_dir: ``post.scp`` (-> arrays in
``data/post.<shard>.ark``), ``meta.json``, ``utt2num_frames`` (T', checked against the student's
encoder output) and ``stats.json``. The set (``meta.json``, ``.done``) and every shard
(``data/post.<n>.json``) are stamped with the teacher's sha256, the options and fingerprints of
the features and transcripts; a re-run whose stamp differs says why and re-dumps.

Resumable: shards of ``--shard_size`` sorted ids become visible only when complete; a re-run
reuses finished shards of the same stamp. One process does everything by default; stage 7 runs

    dump_posteriors ... --num_jobs N --prepare    # prints "done" (up to date) or "dump"
    dump_posteriors ... --num_jobs N --job J      # J = 1..N, in parallel: shards n with (n-1) % N == J-1
    dump_posteriors ... --num_jobs N --merge      # post.scp etc., once every shard is there

``--prepare`` hashes the inputs once and caches the stamp in ``data/stamp_cache.json`` by their
sizes and modification times; the merge refuses missing or stale shards (by number and job).
The result is byte-identical to the one-process dump. ``--ngpu 1``: job J on GPU (J-1) mod count.
Several sets: ``--feats_dir A B --out_dir PA PB`` (paired in order); each mode handles every set in
turn, ``--prepare`` prints one answer per set (the last lines), and a job loads the teacher once for
all of them (each process spends seconds importing ESPnet and loading the model).
See ``espnet_oracle/utils/posteriors.py`` for the storage format.
"""

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

import yaml

from espnet_oracle.utils.datadir import atomic_write_text, model_file, set_transcripts, speech_scp
from espnet_oracle.utils.posteriors import (
    META_NAME,
    PosteriorWriter,
    dump_stamp,
    merge_shards,
    remove_set_files,
    stamp_differences,
    token_list_sha,
)
from espnet_oracle.utils.stamps import read_stamp, scp_targets, stat_of

# the stamp of the inputs as of their file sizes and modification times (see input_signature)
STAMP_CACHE = "stamp_cache.json"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True, help="trained teacher (config.yaml + valid.loss.ave.pth)")
    parser.add_argument("--feats_dir", required=True, nargs="+",
                        help="dump dir of each set, e.g. dump/fbank/train dump/fbank/valid")
    parser.add_argument("--out_dir", required=True, nargs="+", help="one per --feats_dir, in the same order")
    parser.add_argument("--format", choices=("topk", "dense"), default="topk")
    parser.add_argument("--topk", type=int, default=8)
    parser.add_argument("--shard_size", type=int, default=200, help="utterances per shard")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--nj", type=int, default=1, help="torch threads of this process (CPU)")
    parser.add_argument("--ngpu", type=int, default=0, choices=(0, 1),
                        help="1: run the teacher on a GPU (cuda), 0: on CPU")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--job", type=int, default=None,
                      help="dump only the shards of job JOB (1..--num_jobs), then exit")
    mode.add_argument("--prepare", action="store_true",
                      help="check the stamp, clear a stale set; print 'done' (up to date) or 'dump'")
    mode.add_argument("--merge", action="store_true",
                      help="merge the finished shards (refused while any is missing or stale)")
    parser.add_argument("--num_jobs", type=int, default=1, help="number of parallel jobs (with --job)")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.num_jobs < 1 or (args.job is not None and not 1 <= args.job <= args.num_jobs):
        sys.exit(f"dump_posteriors: --job must be in 1..--num_jobs ({args.num_jobs}), got {args.job}")
    if args.shard_size < 1:
        sys.exit("dump_posteriors: --shard_size must be >= 1")
    if len(args.feats_dir) != len(args.out_dir):
        sys.exit(f"dump_posteriors: {len(args.feats_dir)} --feats_dir but {len(args.out_dir)} --out_dir; "
                 "give one output dir per set")
    sets = [argparse.Namespace(**{**vars(args), "feats_dir": feats_dir, "out_dir": out_dir})
            for feats_dir, out_dir in zip(args.feats_dir, args.out_dir)]
    models = {}  # one teacher load for all sets of this process
    if args.prepare:
        # the answers are stdout's last lines (one per set); what is said on the way goes to stderr
        states = [prepare(one, say=lambda text: print(text, file=sys.stderr))[0] for one in sets]
        print("\n".join(states))
    elif args.job is not None:
        for one in sets:
            run_job(one, args.job, args.num_jobs, models=models)
    elif args.merge:
        for one in sets:
            merge(one)
    else:  # one process: all of it
        for one in sets:
            state, stamp = prepare(one, say=print)
            if state != "done":
                started = time.time()
                run_job(one, 1, 1, stamp=stamp, models=models)
                merge(one, stamp=stamp, started=started)


def _model_path(args) -> Path:
    return model_file(Path(args.exp_dir))


def input_signature(model_path: Path, feats_dir) -> str:
    """sha256 over path, size and modification time of the model, the set's feats.scp (or wav.scp),
    its text and every file the scp points into: cheap, and equal signatures stand for equal stamps."""
    scp = speech_scp(feats_dir)
    files = [str(model_path), str(scp), str(Path(feats_dir) / "text")] + (scp_targets(scp, resolve=True) if scp.exists() else [])
    return hashlib.sha256(json.dumps([[f, stat_of(f)] for f in files]).encode("utf-8")).hexdigest()


def current_stamp(args, full: bool = False) -> dict:
    """The stamp of the inputs: from the cache while their signature is unchanged (unless
    ``full``), else hashed anew (and cached)."""
    model_path = _model_path(args)
    signature = input_signature(model_path, args.feats_dir)
    cache = Path(args.out_dir) / "data" / STAMP_CACHE
    cached = read_stamp(cache) or {}
    if not full and cached.get("inputs") == signature and cached.get("options") == _options(args):
        return cached["stamp"]
    stamp = dump_stamp(model_path, args.feats_dir, args.format, args.topk)
    # the inputs must not have changed while they were hashed
    if input_signature(model_path, args.feats_dir) == signature:
        atomic_write_text(cache, json.dumps(dict(inputs=signature, options=_options(args), stamp=stamp),
                                            indent=2, sort_keys=True) + "\n")
    return stamp


def _options(args) -> dict:
    return dict(format=args.format, k=args.topk if args.format == "topk" else None,
                model_file=str(_model_path(args)), feats_dir=str(args.feats_dir))


def prepare(args, say) -> Tuple[str, dict]:
    """('done', stamp) if the set is complete with the current stamp; else clear what is stale
    and return ('dump', stamp)."""
    out_dir = Path(args.out_dir)
    done = out_dir / ".done"
    stamp = current_stamp(args, full=True)
    old_stamp = _stamp_in(done)
    if old_stamp == stamp and (out_dir / "post.scp").exists():
        say(f"dump_posteriors: {out_dir} is up to date")
        return "done", stamp
    previous = _stamp_in(out_dir / META_NAME) or old_stamp
    # first, so an interruption below never leaves .done / post.scp naming removed shards
    remove_set_files(out_dir)
    if previous is not None and previous != stamp:
        say(f"dump_posteriors: re-dumping {out_dir}, its posteriors were made from other inputs: "
            + "; ".join(stamp_differences(previous, stamp)))
        for path in sorted((out_dir / "data").glob("post.*")):
            path.unlink()
    # shards of another stamp left by jobs of an unmerged run
    stale = []
    for path in sorted((out_dir / "data").glob("post.*.json")):
        shard_stamp = _stamp_in(path)
        if shard_stamp != stamp:
            stale.append(shard_stamp)
            PosteriorWriter(str(out_dir), path.name[len("post."):-len(".json")]).remove()
    if stale:
        say(f"dump_posteriors: removed {len(stale)} shard(s) of {out_dir} made from other inputs: "
            + "; ".join(stamp_differences(stale[0], stamp)))
    return "dump", stamp


def _shards(args, ids) -> list[list[str]]:
    return [ids[i : i + args.shard_size] for i in range(0, len(ids), args.shard_size)]


def job_of(shard: int, num_jobs: int) -> int:
    """The job (1..num_jobs) that dumps shard ``shard`` (1-based)."""
    return (shard - 1) % num_jobs + 1


def _device(args, job: int) -> str:
    import torch

    if args.ngpu < 1:
        return "cpu"
    if not torch.cuda.is_available():
        sys.exit("dump_posteriors: --ngpu 1 but torch sees no GPU (CUDA_VISIBLE_DEVICES, driver?)")
    # under Slurm each job sees its own GPU (device 0); a local run spreads the jobs over all
    return f"cuda:{(job - 1) % torch.cuda.device_count()}"


def run_job(args, job: int, num_jobs: int, stamp: Optional[dict] = None, models: Optional[dict] = None) -> None:
    """Dump the shards of job ``job`` of ``num_jobs``; finished shards of the stamp are kept
    (the model is loaded only when a shard is left to dump, and kept in ``models`` by device)."""
    import torch
    from tqdm import tqdm

    from espnet_oracle.utils.inference import FeatureSet, ctc_log_probs, load_model

    torch.set_num_threads(max(1, args.nj))
    out_dir = Path(args.out_dir)
    stamp = stamp if stamp is not None else current_stamp(args)
    train_args = _train_args(Path(args.exp_dir))
    data = FeatureSet(Path(args.feats_dir), train_args)
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    mine = [(n, ids) for n, ids in enumerate(_shards(args, data.utt_ids), 1) if job_of(n, num_jobs) == job]
    todo = []
    stale_told = False
    for index, shard_ids in mine:
        writer = PosteriorWriter(str(out_dir), str(index), fmt=args.format, k=args.topk, stamp=stamp,
                                 vocab_size=len(train_args.token_list))
        state, info = _shard_state(writer, stamp, shard_ids)
        if state == "ok":
            continue
        if state == "stale" and not stale_told:
            stale_told = True
            print(f"dump_posteriors: removing stale shards of {out_dir}: "
                  + "; ".join(stamp_differences(info.get("stamp"), stamp)))
        todo.append((writer, shard_ids))
    device = _device(args, job) if todo else None
    models = {} if models is None else models
    if todo and device not in models:
        models[device] = load_model(Path(args.exp_dir), device=device)[0]
    model = models.get(device)
    desc = f"dump {out_dir}" + (f" (job {job}/{num_jobs}{', ' + device if device else ''})" if num_jobs > 1 else "")
    with tqdm(total=sum(len(ids) for _, ids in todo), desc=desc, unit="utt", file=sys.stderr) as bar:
        for writer, shard_ids in todo:
            writer.remove()
            shard_shift = None
            started = time.time()
            for batch in data.batches(args.batch_size, shard_ids):
                utterances = [data.get(u) for u in batch]
                log_probs, lengths, _ = ctc_log_probs(model, utterances)
                log_probs, lengths = log_probs.float().cpu(), lengths.cpu()
                for i, utt in enumerate(utterances):
                    length = int(lengths[i])
                    if shard_shift is None:
                        shard_shift = data.frame_shift_ms(utt, length)
                    writer.write(utt.utt_id, log_probs[i, :length].numpy())
                bar.update(len(batch))
            writer.close(info=dict(frame_shift_ms=shard_shift, seconds=round(time.time() - started, 3)))
    if num_jobs > 1:
        print(f"dump_posteriors: job {job}/{num_jobs} of {out_dir}: {len(todo)} shard(s) dumped, "
              f"{len(mine) - len(todo)} already done (of {len(mine)})")


def _train_args(exp_dir: Path) -> argparse.Namespace:
    """The teacher's training options (config.yaml), without building the model."""
    with open(Path(exp_dir) / "config.yaml", encoding="utf-8") as f:
        args = argparse.Namespace(**yaml.safe_load(f))
    if isinstance(args.token_list, str):
        with open(args.token_list, encoding="utf-8") as f:
            args.token_list = [line.rstrip() for line in f]
    return args


def merge(args, stamp: Optional[dict] = None, started: Optional[float] = None) -> None:
    """post.scp, utt2num_frames, meta.json, stats.json and .done from the finished shards."""
    out_dir = Path(args.out_dir)
    stamp = stamp if stamp is not None else current_stamp(args)
    model_path = _model_path(args)
    train_args = _train_args(Path(args.exp_dir))
    utt_ids = list(set_transcripts(args.feats_dir))
    shards = _shards(args, utt_ids)
    states = dict(missing=[], stale=[], other=[], ok=[])
    for index, shard_ids in enumerate(shards, 1):
        writer = PosteriorWriter(str(out_dir), str(index), fmt=args.format, k=args.topk, stamp=stamp)
        state, info = _shard_state(writer, stamp, shard_ids)
        states[state].append((index, info))
    infos = [info for _, info in states.pop("ok")]
    if any(states.values()):
        sys.exit(_refusal(out_dir, len(shards), args.num_jobs, states, stamp))
    # Stale shards of an earlier run with other shard sizes would add duplicates.
    expected = {f"post.{i}.scp" for i in range(1, len(shards) + 1)}
    for path in (out_dir / "data").glob("post.*.scp"):
        if path.name not in expected:
            PosteriorWriter(str(out_dir), path.name[len("post."):-len(".scp")]).remove()

    def check_ids(ids):
        if ids != sorted(utt_ids):
            missing_ids = sorted(set(utt_ids) - set(ids))[:5]
            sys.exit(f"dump_posteriors: {out_dir} does not cover {args.feats_dir}: e.g. {missing_ids}")

    shift = next((info["frame_shift_ms"] for info in infos if info.get("frame_shift_ms") is not None), None)
    meta = dict(format=args.format, k=args.topk if args.format == "topk" else None,
                vocab_size=len(train_args.token_list), token_list_sha=token_list_sha(train_args.token_list),
                teacher=str(args.exp_dir), teacher_model_file=str(model_path), teacher_model=train_args.model,
                feats_dir=str(args.feats_dir), frame_shift_ms=shift,
                leftover_mass="exact leftover log-mass stored per frame, spread evenly over the "
                "tokens outside the top k", stamp=stamp)
    shard_seconds = sum(float(info.get("seconds") or 0.0) for info in infos)
    stats = merge_shards(out_dir, len(shards), meta, check_ids,
                         seconds=(time.time() - started) if started is not None else shard_seconds,
                         shard_seconds=shard_seconds, shards=len(shards))
    print(f"dump_posteriors: {stats['utterances']} utterances, {stats['frames']} frames, "
          f"{stats['bytes_per_frame']:.1f} bytes/frame -> {out_dir / 'post.scp'}")


def _refusal(out_dir, total, num_jobs, states, stamp) -> str:
    def named(shards):
        indices = [n for n, _ in shards]
        shown = ", ".join(str(n) for n in indices[:20]) + (f" and {len(indices) - 20} more" if len(indices) > 20 else "")
        jobs = sorted({job_of(n, num_jobs) for n in indices})
        return f"{shown} (job{'s' if len(jobs) > 1 else ''} {', '.join(map(str, jobs))} of {num_jobs})"

    parts = []
    if states["missing"]:
        parts.append(f"shard(s) {named(states['missing'])} not finished")
    if states["stale"]:
        why = "; ".join(stamp_differences(states["stale"][0][1].get("stamp"), stamp))
        parts.append(f"shard(s) {named(states['stale'])} made from other inputs ({why})")
    if states["other"]:
        parts.append(f"shard(s) {named(states['other'])} hold other utterances (another --shard_size?)")
    return (f"dump_posteriors: refusing to merge {out_dir} ({total} shards): " + "; ".join(parts)
            + ". Run those jobs (again) with the same options, then --merge.")


def _stamp_in(path) -> Optional[dict]:
    return (read_stamp(path) or {}).get("stamp")


def _shard_state(writer: PosteriorWriter, stamp: dict, shard_ids) -> Tuple[str, Optional[dict]]:
    """('missing', 'stale', 'other' (utterances) or 'ok', the finished shard's info)."""
    info = writer.read_info()
    if info is None:
        return "missing", None
    if info.get("stamp") != stamp:
        return "stale", info
    keys = [line.split(maxsplit=1)[0] for line in writer.scp.read_text(encoding="utf-8").splitlines() if line]
    return ("ok" if sorted(keys) == sorted(shard_ids) else "other"), info


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
