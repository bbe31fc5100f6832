#!/usr/bin/env python3
"""How often each teacher's stored posteriors on a data set spell a wrong transcript.

Why it exists: KD from a teacher's frame posteriors hands the student that teacher's errors on the
training set; this measures them from the stage-7 dump itself (greedy path of the stored top-k
posteriors: argmax per frame, CTC collapse, blank removed), not from a re-run of the teacher.

    python local/teacher_train_errors.py --exp egs/synth_words/exp --dump egs/synth_words/dump/extracted \\
        --set train [--teachers teacher_conventional teacher_oracle] [--examples 3]

Prints one tab-separated line per teacher: utterances, share of utterances whose greedy token
sequence differs from the transcript's, token error rate (edit distance / reference tokens).
"""

import argparse
import sys
from pathlib import Path

import editdistance
import torch
import yaml
from espnet2.text.build_tokenizer import build_tokenizer
from espnet2.text.cleaner import TextCleaner

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.inference import greedy_path
from espnet_oracle.utils.posteriors import TeacherPosteriorReader


def teacher_errors(exp_dir: Path, post_scp: Path, text: dict, examples: int) -> dict:
    config = yaml.safe_load((exp_dir / "config.yaml").read_text())
    token_list = config["token_list"]
    if isinstance(token_list, str):
        token_list = Path(token_list).read_text().split()
    if token_list[0] != "<blank>":
        raise SystemExit(f"{exp_dir}/config.yaml: token 0 is {token_list[0]!r}, not <blank>")
    # the training targets' tokenizer (ESPnet's preprocessor options from the same config)
    tokenizer = build_tokenizer(config["token_type"], bpemodel=config.get("bpemodel"),
                                non_linguistic_symbols=config.get("non_linguistic_symbols"),
                                g2p_type=config.get("g2p"))
    clean = TextCleaner(config.get("cleaner"))
    token_id = {token: i for i, token in enumerate(token_list)}
    unk = token_id.get("<unk>")
    posteriors = TeacherPosteriorReader(str(post_scp))  # either dump format, as (T', V) log-probs
    wrong = edits = ref_tokens = 0
    shown = []
    for utt in posteriors.keys():
        if utt not in text:
            raise SystemExit(f"{post_scp}: utterance {utt} is not in the transcript file")
        ref = [token_id.get(t, unk) for t in tokenizer.text2tokens(clean(text[utt]))]
        hyp, _ = greedy_path(torch.from_numpy(posteriors[utt]), blank_id=0)
        distance = editdistance.eval(ref, hyp)
        edits += distance
        ref_tokens += len(ref)
        if distance:
            wrong += 1
            if len(shown) < examples:
                shown.append(f"{utt}: ref {' '.join(token_list[i] for i in ref)!r} "
                             f"hyp {' '.join(token_list[i] for i in hyp)!r}")
        text.pop(utt)  # what is left at the end has no posteriors
    return dict(wrong=wrong, edits=edits, ref_tokens=ref_tokens, shown=shown)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", type=Path, required=True, help="the run's exp dir")
    parser.add_argument("--dump", type=Path, required=True, help="the run's feature dir (holds <set>/text)")
    parser.add_argument("--set", required=True, help="data set with a stage-7 dump, e.g. train or train_sp")
    parser.add_argument("--teachers", nargs="+", default=["teacher_conventional", "teacher_oracle"])
    parser.add_argument("--examples", type=int, default=0, help="print this many wrong utterances per teacher")
    args = parser.parse_args(argv)

    print("teacher\tset\tutterances\twrong_utterances_%\ttoken_error_rate_%")
    for teacher in args.teachers:
        post_scp = args.exp / teacher / "posteriors" / args.set / "post.scp"
        if not post_scp.is_file():
            raise SystemExit(f"{post_scp} not found: run stage 7 for {args.set}")
        text = read_kaldi_map(args.dump / args.set / "text")
        n_utts = len(text)
        result = teacher_errors(args.exp / teacher, post_scp, text, args.examples)
        if text:  # utterances of the transcript without posteriors
            raise SystemExit(f"{post_scp}: no posteriors for {len(text)} of {n_utts} utterances, "
                             f"e.g. {next(iter(text))}")
        print(f"{teacher}\t{args.set}\t{n_utts}\t{100 * result['wrong'] / n_utts:.2f}\t"
              f"{100 * result['edits'] / max(result['ref_tokens'], 1):.2f}")
        for line in result["shown"]:
            print(f"  {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
