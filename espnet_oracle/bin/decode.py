"""Stage 9: decode systems on data sets with greedy CTC and ESPnet's CTC prefix beam search.
Why it exists: the Oracle Teacher must be fed the transcript, and spike timing needs each token's CTC frame (beam search is ESPnet's own).

For every system (an experiment dir under --exp) and set, writes
``<exp>/<system>/decode_<set>_<mode>/`` with ``text`` (words), ``token`` (tokens)
and, for greedy decoding, ``ctc_frames`` (first frame of every emitted token on
the best CTC path), ``frame_shift_ms`` and ``frame_offset_ms`` (time of encoder frame 0: the
centre of its receptive field, ``FeatureSet.frame_offset_ms``) for spike-timing scoring.

The Oracle Teacher is decoded in its normal mode, i.e. fed the TRUE transcript:
its numbers are oracle numbers, not recognition results (``ORACLE`` file marks
such decode dirs). ``.done`` holds the stamp of a finished decode dir (model and
config checksums, feature fingerprint, mode, beam size; see
``espnet_oracle.utils.stamps``): a dir with the same stamp is skipped, one made
differently (or by an older version, without a stamp) is moved aside to
``decode_<set>_<mode>.stale-<time>`` and decoded anew. Encoders run batched; ESPnet's beam search runs per
utterance (it vectorizes over the beam, not over utterances).
"""

import argparse
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

from espnet_oracle.utils.datadir import atomic_write_text
from espnet_oracle.utils.stamps import decode_stamp, differences, move_aside, read_stamp, write_stamp


def decode_one(job):
    """Decode one (system, set): greedy and/or beam from one encoder pass."""
    exp_dir, feats_dir, modes, beam_size, batch_size = job
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer

    from espnet_oracle.utils.inference import (
        FeatureSet,
        encode_batch,
        greedy_path,
        is_oracle,
        load_model,
    )

    torch.set_num_threads(1)
    exp_dir, feats_dir = Path(exp_dir), Path(feats_dir)
    set_name = feats_dir.name
    out_dirs = {m: exp_dir / f"decode_{set_name}_{m}" for m in modes}
    stamps = {m: decode_stamp(exp_dir, feats_dir, m, beam_size) for m in modes}
    notes = []
    for m in list(modes):
        reasons = stale_reasons(out_dirs[m], stamps[m])
        if reasons is None:
            continue
        if not reasons:
            modes = tuple(x for x in modes if x != m)  # made with this model, input and options
            continue
        moved = move_aside(out_dirs[m])
        notes.append(f"{out_dirs[m].name} was made differently ({'; '.join(reasons)}); moved aside to {moved.name}")
    if not modes:
        return f"{exp_dir.name}/{set_name}: already decoded (same model, features and options)"
    started = time.time()
    model, args = load_model(exp_dir)
    token_list = list(model.token_list)
    data = FeatureSet(feats_dir, args)
    oracle = is_oracle(model)
    beam_search = None
    if "beam" in modes:
        beam_search = BatchBeamSearch(
            scorers={"ctc": CTCPrefixScorer(ctc=model.ctc, eos=model.eos)},
            weights={"ctc": 1.0},
            beam_size=beam_size,
            vocab_size=len(token_list),
            sos=model.sos,
            eos=model.eos,
            token_list=token_list,
            pre_beam_score_key=None,
        ).eval()
    results = {m: {"text": [], "token": [], "frames": []} for m in modes}
    shift = None
    for batch_ids in data.batches(batch_size):
        utterances = [data.get(u) for u in batch_ids]
        with torch.no_grad():
            encoder_out, lengths, _ = encode_batch(model, utterances)
            log_probs = model.ctc.log_softmax(encoder_out)
        for i, utt in enumerate(utterances):
            length = int(lengths[i])
            if shift is None:
                shift = data.frame_shift_ms(utt, length)
            if "greedy" in modes:
                ids, frames = greedy_path(log_probs[i, :length], model.blank_id)
                tokens = [token_list[t] for t in ids]
                _add(results["greedy"], utt.utt_id, tokens, args.token_type, frames)
            if beam_search is not None:
                with torch.no_grad():
                    hyps = beam_search(x=encoder_out[i, :length], maxlenratio=0.0, minlenratio=0.0)
                ids = [int(t) for t in hyps[0].yseq[1:-1].tolist()] if hyps else []
                ids = [t for t in ids if t not in (model.blank_id, model.sos, model.eos)]
                tokens = [token_list[t] for t in ids]
                _add(results["beam"], utt.utt_id, tokens, args.token_type, None)
    for mode, out in results.items():
        _write(out_dirs[mode], out, (shift, data.frame_offset_ms(model)), oracle, mode, stamps[mode])
    return "".join(f"{n}\n        " for n in notes) + (
        f"{exp_dir.name}/{set_name}: {len(data.utt_ids)} utterances "
        f"({', '.join(modes)}) in {time.time() - started:.1f} s"
    )


def stale_reasons(out_dir: Path, stamp: dict):
    """None: nothing finished there; []: finished with this very stamp; else why it differs."""
    if not (out_dir / ".done").exists():
        return None  # unfinished (or absent): decoded anew in place
    if (out_dir / "ctc_frames").exists() and not (out_dir / "frame_offset_ms").exists():
        return ["it has no frame_offset_ms (made by an older version)"]
    return differences(read_stamp(out_dir / ".done"), stamp)


def _add(out, utt_id, tokens, token_type, frames):
    from espnet_oracle.utils.inference import tokens_to_text

    out["text"].append(f"{utt_id} {tokens_to_text(tokens, token_type)}".rstrip())
    out["token"].append(f"{utt_id} {' '.join(tokens)}".rstrip())
    if frames is not None:
        out["frames"].append(f"{utt_id} {' '.join(map(str, frames))}".rstrip())


def _write(out_dir: Path, out, timing, oracle, mode, stamp):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ".done").unlink(missing_ok=True)
    atomic_write_text(out_dir / "text", "\n".join(sorted(out["text"])) + "\n")
    atomic_write_text(out_dir / "token", "\n".join(sorted(out["token"])) + "\n")
    if out["frames"]:
        atomic_write_text(out_dir / "ctc_frames", "\n".join(sorted(out["frames"])) + "\n")
        for name, value in zip(("frame_shift_ms", "frame_offset_ms"), timing):
            atomic_write_text(out_dir / name, f"{value:g}\n")
    if oracle:
        atomic_write_text(
            out_dir / "ORACLE", "decoded with the true transcript fed to the Oracle Teacher\n"
        )
    atomic_write_text(out_dir / "mode", f"{mode}\n")
    write_stamp(out_dir / ".done", stamp)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp", required=True, help="experiment root, e.g. exp")
    parser.add_argument("--systems", nargs="+", required=True, help="experiment dirs under --exp")
    parser.add_argument("--dump_dir", required=True, help="feature dump root, e.g. dump/fbank")
    parser.add_argument("--sets", required=True, help="space-separated set names")
    parser.add_argument("--modes", default="greedy beam", help="greedy and/or beam")
    parser.add_argument("--beam_size", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--nj", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    modes = tuple(args.modes.split())
    for m in modes:
        if m not in ("greedy", "beam"):
            parser.error(f"unknown decode mode {m!r}")
    jobs = []
    for system in args.systems:
        for set_name in args.sets.split():
            feats_dir = Path(args.dump_dir) / set_name
            if not (feats_dir / "feats.scp").exists() and not (feats_dir / "wav.scp").exists():
                sys.exit(f"decode: {feats_dir}/feats.scp (or wav.scp) missing — run stage 2 first")
            jobs.append((str(Path(args.exp) / system), str(feats_dir), modes, args.beam_size, args.batch_size))
    # Import once in the parent so forked workers start warm.
    import espnet_oracle.tasks.oracle_asr  # noqa: F401

    if args.nj > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(args.nj) as pool:
            for message in pool.imap_unordered(decode_one, jobs):
                print(f"decode: {message}", flush=True)
    else:
        for job in jobs:
            print(f"decode: {decode_one(job)}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
