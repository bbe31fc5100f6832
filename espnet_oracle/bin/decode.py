"""Stage 9: decode systems on data sets with greedy CTC and ESPnet's CTC prefix beam search.
Why it exists: the Oracle Teacher must be fed the transcript, and spike timing needs each token's CTC frame
(beam search is ESPnet's own: plain models through ``espnet2.bin.asr_inference.Speech2Text``).

For every system (an experiment dir under --exp) and set, writes ``<exp>/<system>/decode_<set>_<mode>/``
with ``text`` (words), ``token`` (tokens) and, for greedy decoding, ``ctc_frames`` (first frame of every
emitted token on the best CTC path), ``frame_shift_ms`` and ``frame_offset_ms`` (time of encoder frame 0:
the centre of its receptive field, ``FeatureSet.frame_offset_ms``) for spike-timing scoring.

The Oracle Teacher is decoded in its normal mode, i.e. fed the TRUE transcript: its numbers are oracle
numbers, not recognition results (``ORACLE`` file marks such decode dirs). ``.done`` holds the stamp of a
finished decode dir (model and config checksums, feature fingerprint, mode, beam size; see
``espnet_oracle.utils.stamps``): a dir with the same stamp is skipped, one made differently (or by an older
version, without a stamp) is moved aside to ``decode_<set>_<mode>.stale-<time>`` and decoded anew.
Greedy: encoders run batched. Beam: per utterance (ESPnet vectorizes over the beam, not over utterances),
plain models (conventional teacher, students) by ESPnet's own ``Speech2Text`` of ``asr_inference`` (CTC
weight 1, no LM), the Oracle Teacher by ESPnet's ``BatchBeamSearch`` with its CTC prefix scorer on the
fused frames (``Speech2Text`` cannot feed it the transcript). ``seconds`` holds the wall time of decoding
the set (all modes of one encoder pass together).

For sequence-level KD (stage 7), ``--nbest N`` (N > 1, beam mode) also writes the beam's N best hypotheses:
``nbest/token.<r>`` and ``nbest/score.<r>`` (``utt log_score``, ESPnet's hypothesis score) for ranks
r = 1..N (an utterance with fewer ended hypotheses is missing from the lower ranks), and ``--prefix`` names
the output dirs ``<prefix>_<set>_<mode>`` so that they never collide with stage 9's ``decode_*`` dirs.
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


@torch.no_grad()
def decode_one(job):
    """Decode one (system, set): greedy and/or beam from one encoder pass."""
    exp_dir, feats_dir, modes, beam_size, batch_size, nbest, prefix, model_name = job
    from espnet.nets.batch_beam_search import BatchBeamSearch
    from espnet.nets.scorers.ctc import CTCPrefixScorer

    from espnet_oracle.utils.datadir import model_file
    from espnet_oracle.utils.inference import (FeatureSet, encode_batch, greedy_path, is_oracle, load_model,
                                               quiet_model_build)

    torch.set_num_threads(1)
    exp_dir, feats_dir = Path(exp_dir), Path(feats_dir)
    set_name = feats_dir.name
    out_dirs = {m: exp_dir / f"{prefix}_{set_name}_{m}" for m in modes}
    stamps = {m: decode_stamp(exp_dir, feats_dir, m, beam_size, model_name) for m in modes}
    if nbest > 1 and "beam" in stamps:  # (absent for 1: the stamps of earlier decodes stay valid)
        stamps["beam"]["nbest"] = nbest
    notes = []
    for m in list(modes):
        reasons = stale_reasons(out_dirs[m], stamps[m])
        if reasons:
            notes.append(f"{out_dirs[m].name} was made differently ({'; '.join(reasons)}); "
                         f"moved aside to {move_aside(out_dirs[m]).name}")
        elif reasons is not None:  # []: made with this model, input and options
            modes = tuple(x for x in modes if x != m)
    if not modes:
        return f"{exp_dir.name}/{set_name}: already decoded (same model, features and options)"
    started = time.time()
    model, args = load_model(exp_dir, name=model_name)
    token_list = list(model.token_list)
    data = FeatureSet(feats_dir, args)
    oracle = is_oracle(model)
    speech2text = beam_search = None
    if "beam" in modes and not oracle:
        from espnet2.bin.asr_inference import Speech2Text

        with quiet_model_build():
            speech2text = Speech2Text(asr_train_config=exp_dir / "config.yaml", asr_model_file=model_file(exp_dir, model_name),
                                      beam_size=beam_size, ctc_weight=1.0, lm_weight=0.0, nbest=nbest)
    elif "beam" in modes:
        beam_search = BatchBeamSearch(scorers={"ctc": CTCPrefixScorer(ctc=model.ctc, eos=model.eos)},
                                      weights={"ctc": 1.0}, beam_size=beam_size, vocab_size=len(token_list),
                                      sos=model.sos, eos=model.eos, token_list=token_list,
                                      pre_beam_score_key=None).eval()
    results = {m: {"text": [], "token": [], "frames": []} for m in modes}
    ranks = {r: {"token": [], "score": []} for r in range(1, nbest + 1)} if nbest > 1 else {}
    shift = None
    for batch_ids in data.batches(batch_size):
        utterances = [data.get(u) for u in batch_ids]
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
            if "beam" in modes:
                if speech2text is not None:
                    hyps = [([token_list[t] for t in token_int], float(hyp.score))
                            for _, _, token_int, hyp in speech2text(torch.from_numpy(utt.feats))]
                else:
                    hyps = [(_hyp_tokens(hyp, model, token_list), float(hyp.score)) for hyp in
                            beam_search(x=encoder_out[i, :length], maxlenratio=0.0, minlenratio=0.0)]
                _add(results["beam"], utt.utt_id, hyps[0][0] if hyps else [], args.token_type, None)
                # rank 1 covers every utterance: no ended hypothesis is an empty one
                for rank, (tokens, score) in zip(ranks, hyps or [([], 0.0)]):
                    ranks[rank]["token"].append(f"{utt.utt_id} {' '.join(tokens)}".rstrip())
                    ranks[rank]["score"].append(f"{utt.utt_id} {score:.6f}")
    seconds = time.time() - started
    for mode, out in results.items():
        if mode == "beam" and ranks:
            (out_dirs[mode] / ".done").unlink(missing_ok=True)
            (out_dirs[mode] / "nbest").mkdir(parents=True, exist_ok=True)
            for rank, lists in ranks.items():
                for name, lines in lists.items():
                    atomic_write_text(out_dirs[mode] / "nbest" / f"{name}.{rank}",
                                      "".join(f"{line}\n" for line in sorted(lines)))
        _write(out_dirs[mode], out, (shift, data.frame_offset_ms(model)), oracle, mode, stamps[mode], seconds)
    return "".join(f"{n}\n        " for n in notes) + (
        f"{exp_dir.name}/{set_name}: {len(data.utt_ids)} utterances "
        f"({', '.join(modes)}) in {time.time() - started:.1f} s"
    )


def _hyp_tokens(hyp, model, token_list):
    """The tokens of one ESPnet beam-search hypothesis (without <sos>/<eos> and blank)."""
    ids = [int(t) for t in hyp.yseq[1:-1].tolist()]
    return [token_list[t] for t in ids if t not in (model.blank_id, model.sos, model.eos)]


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


def _write(out_dir: Path, out, timing, oracle, mode, stamp, seconds):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ".done").unlink(missing_ok=True)
    atomic_write_text(out_dir / "text", "\n".join(sorted(out["text"])) + "\n")
    atomic_write_text(out_dir / "token", "\n".join(sorted(out["token"])) + "\n")
    if out["frames"]:
        atomic_write_text(out_dir / "ctc_frames", "\n".join(sorted(out["frames"])) + "\n")
        for name, value in zip(("frame_shift_ms", "frame_offset_ms"), timing):
            atomic_write_text(out_dir / name, f"{value:g}\n")
    if oracle:
        atomic_write_text(out_dir / "ORACLE", "decoded with the true transcript fed to the Oracle Teacher\n")
    atomic_write_text(out_dir / "mode", f"{mode}\n")
    atomic_write_text(out_dir / "seconds", f"{seconds:.1f}\n")
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
    parser.add_argument("--nbest", type=int, default=1,
                        help="beam mode: also write the N best hypotheses (nbest/token.<r>, nbest/score.<r>)")
    parser.add_argument("--prefix", default="decode", help="output dirs <system>/<prefix>_<set>_<mode>")
    parser.add_argument("--student_model", default="valid.loss.ave.pth",
                        help="checkpoint of the student_* systems in their exp dirs (e.g. valid.loss.best.pth, "
                             "ESPnet's single best epoch by validation loss); other systems: valid.loss.ave.pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    modes = tuple(args.modes.split())
    for m in modes:
        if m not in ("greedy", "beam"):
            parser.error(f"unknown decode mode {m!r}")
    if args.nbest < 1 or (args.nbest > 1 and "beam" not in modes):
        parser.error("--nbest N needs N >= 1 and, for N > 1, --modes beam")
    if args.nbest > args.beam_size:
        parser.error(f"--nbest {args.nbest} exceeds --beam_size {args.beam_size}")
    jobs = []
    for system in args.systems:
        for set_name in args.sets.split():
            feats_dir = Path(args.dump_dir) / set_name
            if not (feats_dir / "feats.scp").exists() and not (feats_dir / "wav.scp").exists():
                sys.exit(f"decode: {feats_dir}/feats.scp (or wav.scp) missing — run stage 2 first")
            jobs.append((str(Path(args.exp) / system), str(feats_dir), modes, args.beam_size, args.batch_size,
                         args.nbest, args.prefix,
                         args.student_model if system.startswith("student_") else "valid.loss.ave.pth"))
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
