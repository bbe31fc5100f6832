#!/usr/bin/env python3
"""What a KD student is taught: greedy WER / CER of the stored teacher posteriors against the set's
transcripts, and how peaked they are (mean top probability; share of frames, and of non-blank
frames, whose top probability exceeds 0.99), for each teacher of an experiment dir.

    local/posterior_stats.py [--exp exp] [--set train] [--teachers "teacher_conventional teacher_oracle"]

Reads <exp>/<teacher>/posteriors/<set>/post.scp (stage 7, top-k or dense layout) and
data/<set>/text; BPE pieces are joined at "▁" (sentencepiece's word boundary).
"""

import argparse
from pathlib import Path

import editdistance
import kaldiio
import numpy as np

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.posteriors import read_meta, topk_unpack


def frame_argmax_and_top_prob(matrix: np.ndarray, topk: bool):
    if topk:
        ids, values, _ = topk_unpack(matrix)
        return ids[:, 0], np.exp(values[:, 0])  # top-k ids are stored best first
    return matrix.argmax(1), np.exp(matrix.max(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--set", default="train")
    parser.add_argument("--teachers", default="teacher_conventional teacher_oracle")
    parser.add_argument("--token_list", default=None, help="default: data/token_list/*/tokens.txt (the only one)")
    args = parser.parse_args(argv)
    token_list = args.token_list or str(next(Path("data/token_list").glob("*/tokens.txt")))
    tokens = Path(token_list).read_text().split()
    refs = read_kaldi_map(f"data/{args.set}/text")
    print("| teacher | set | greedy WER | greedy CER | mean top prob | frames top > 0.99 | non-blank frames top > 0.99 |")
    print("|---|---|---|---|---|---|---|")
    for teacher in args.teachers.split():
        scp = f"{args.exp}/{teacher}/posteriors/{args.set}/post.scp"
        topk = read_meta(scp).get("format") == "topk"
        word_err = words = char_err = chars = 0
        top_probs, non_blank = [], []
        for utt, matrix in kaldiio.load_scp_sequential(scp):
            best, top = frame_argmax_and_top_prob(matrix, topk)
            top_probs.append(top)
            non_blank.append(best != 0)
            pieces = [tokens[t] for i, t in enumerate(best) if t != 0 and (i == 0 or t != best[i - 1])]
            hyp = "".join(pieces).replace("\u2581", " ").split()
            ref = refs[utt].split()
            word_err += editdistance.eval(hyp, ref)
            words += len(ref)
            char_err += editdistance.eval("".join(hyp), "".join(ref))  # characters without spaces
            chars += len("".join(ref))
        top, speaking = np.concatenate(top_probs), np.concatenate(non_blank)
        print(f"| {teacher} | {args.set} | {100 * word_err / words:.2f} | {100 * char_err / chars:.2f} | "
              f"{top.mean():.3f} | {100 * (top > 0.99).mean():.1f} % | {100 * (top[speaking] > 0.99).mean():.1f} % |")


if __name__ == "__main__":
    main()
