#!/usr/bin/env python3
"""What a KD student is taught: greedy WER / CER of the stored teacher posteriors against the set's
transcripts, and how peaked they are (mean top probability; share of frames, and of non-blank
frames, whose top probability exceeds 0.99), for each teacher of an experiment dir.

    local/posterior_stats.py [--exp exp] [--set train] [--teachers "teacher_conventional teacher_oracle"]

Reads <exp>/<teacher>/posteriors/<set>/post.scp (stage 7, top-k or dense layout) and
data/<set>/text; the greedy path, its text and WER/CER (spaces excluded) as decode and
teacher_eval compute them (inference.greedy_path, tokens_to_text; metrics.wer_cer).
"""

import argparse
from pathlib import Path

import torch

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.inference import greedy_path, tokens_to_text
from espnet_oracle.utils.metrics import wer_cer
from espnet_oracle.utils.posteriors import TeacherPosteriorReader


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--set", default="train")
    parser.add_argument("--teachers", default="teacher_conventional teacher_oracle")
    parser.add_argument("--token_list", default=None, help="default: data/token_list/*/tokens.txt (the only one)")
    parser.add_argument("--token_type", default="bpe")
    args = parser.parse_args(argv)
    token_list = args.token_list or str(next(Path("data/token_list").glob("*/tokens.txt")))
    tokens = Path(token_list).read_text().split()
    blank_id = tokens.index("<blank>")
    refs = read_kaldi_map(f"data/{args.set}/text")
    print("| teacher | set | greedy WER | greedy CER | mean top prob | frames top > 0.99 | non-blank frames top > 0.99 |")
    print("|---|---|---|---|---|---|---|")
    for teacher in args.teachers.split():
        posteriors = TeacherPosteriorReader(f"{args.exp}/{teacher}/posteriors/{args.set}/post.scp")
        hyps, top_probs, non_blank = {}, [], []
        for utt in posteriors.keys():
            log_probs = torch.from_numpy(posteriors[utt])  # (T', V), top-k dumps expanded
            ids, _ = greedy_path(log_probs, blank_id)
            hyps[utt] = tokens_to_text([tokens[t] for t in ids], args.token_type)
            top, best = log_probs.max(dim=-1)
            top_probs.append(top.exp())
            non_blank.append(best != blank_id)
        scores = wer_cer(refs, hyps)  # refuses a dump whose utterances differ from the set's
        top, speaking = torch.cat(top_probs), torch.cat(non_blank)
        print(f"| {teacher} | {args.set} | {scores.wer:.2f} | {scores.cer:.2f} | {top.mean():.3f} | "
              f"{100 * (top > 0.99).float().mean():.1f} % | {100 * (top[speaking] > 0.99).float().mean():.1f} % |")


if __name__ == "__main__":
    main()
