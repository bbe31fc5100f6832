#!/usr/bin/env python3
"""Where a teacher's second choices go: on its spike frames (argmax not blank), the distribution
over the words renormalised (about what ``--kd_frames teacher_nonblank_words`` distils, which also
keeps ``<unk>`` and ``<sos/eos>``), and of the mass
left beside the argmax word, the share on the *other words of the utterance's transcript*.

A teacher that ranks its alternatives by sound puts that share near chance (the other transcript
words among all other words, utterance by utterance); one whose alternatives follow the
transcript it was fed puts more there. A source-only student cannot know the transcript, so such
second choices are targets it cannot learn from the audio. Word units only (a transcript word must
be one token). Also prints each word's three most likely alternatives.

  python local/teacher_residual_check.py --text dump/fbank/train_sp/text \
      --token_list data/token_list/word/tokens.txt \
      --teacher conventional=exp/teacher_conventional/posteriors/train_sp/post.scp \
      --teacher oracle=exp/teacher_oracle/posteriors/train_sp/post.scp
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.posteriors import TeacherPosteriorReader

SPECIAL = ("<blank>", "<unk>", "<sos/eos>")


def residual_stats(reader, transcripts: dict, tokens: list) -> dict:
    """Spike-frame statistics of one teacher's posteriors (see the module docstring)."""
    token_id = {t: i for i, t in enumerate(tokens)}
    words = np.array([i for i, t in enumerate(tokens) if t not in SPECIAL])
    blank = token_id["<blank>"]
    confusion = np.zeros((len(tokens), len(tokens)))
    frames = off_transcript = 0
    top_mass, share, chance = [], [], []
    for utt in reader.keys():
        if utt not in transcripts:
            raise SystemExit(f"{utt}: posteriors but no transcript in --text")
        missing = [w for w in transcripts[utt] if w not in token_id]
        if missing:
            raise SystemExit(f"{utt}: {' '.join(missing)} not in --token_list (word units only)")
        in_transcript = {token_id[w] for w in transcripts[utt]}
        probs = np.exp(reader[utt].astype(np.float64))
        for frame in np.nonzero(probs.argmax(1) != blank)[0]:
            q = probs[frame, words] / probs[frame, words].sum()
            best = int(words[q.argmax()])
            frames += 1
            off_transcript += best not in in_transcript
            top_mass.append(q.max())
            others = words != best
            confusion[best, words[others]] += q[others]
            rest = q[others].sum()
            alternatives = [w for w in in_transcript if w != best]
            if alternatives and rest > 0:
                share.append(q[np.isin(words, alternatives)].sum() / rest)
                chance.append(len(alternatives) / (len(words) - 1))
    return dict(frames=frames, off_transcript=off_transcript / max(frames, 1),
                top_mass=float(np.mean(top_mass)) if top_mass else float("nan"),
                share=float(np.mean(share)) if share else float("nan"),
                chance=float(np.mean(chance)) if chance else float("nan"),
                share_frames=len(share), confusion=confusion)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", required=True, help="transcripts of the dumped set (utt word word ...)")
    parser.add_argument("--token_list", required=True)
    parser.add_argument("--teacher", action="append", required=True, help="NAME=post.scp (repeat)")
    args = parser.parse_args(argv)
    tokens = Path(args.token_list).read_text(encoding="utf-8").split()
    transcripts = {utt: text.split() for utt, text in read_kaldi_map(args.text).items()}
    print("teacher\tspike_frames\targmax_off_transcript_%\tmean_argmax_mass\t"
          "residual_on_other_transcript_words_%\tchance_%\tframes_with_other_words")
    confusions = {}
    for spec in args.teacher:
        name, _, scp = spec.partition("=")
        if not scp:
            raise SystemExit(f"--teacher {spec!r}: want NAME=post.scp")
        r = residual_stats(TeacherPosteriorReader(scp), transcripts, tokens)
        confusions[name] = r["confusion"]
        print(f"{name}\t{r['frames']}\t{100 * r['off_transcript']:.2f}\t{r['top_mass']:.4f}\t"
              f"{100 * r['share']:.1f}\t{100 * r['chance']:.1f}\t{r['share_frames']}")
    for name, confusion in confusions.items():
        print(f"\n{name}: each spike word's three most likely alternatives (share of the mass beside it)")
        for word in np.nonzero(confusion.sum(1))[0]:
            row = confusion[word] / confusion[word].sum()
            print(f"  {tokens[word]} -> " + ", ".join(f"{tokens[o]} {100 * row[o]:.0f} %"
                                                    for o in np.argsort(-row)[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
