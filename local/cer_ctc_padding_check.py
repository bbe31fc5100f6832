#!/usr/bin/env python3
"""Greedy dev CER of trained models scored two ways: argmax over the whole padded batch (what
ESPnet's validation ``cer_ctc`` did before ``espnet_oracle/asr/length_masked_cer.py``) and over
each utterance's own frames.

Why it exists: the record of how much the padding inflated each model's validation CER
(RESULTS_cer_ctc_padding_2026-12-08.md). Batches as ESPnet's ``sorted`` batches: the set sorted by
length, ``--batch_size`` utterances each, features zero-padded; character errors summed over the
set (ESPnet's reporter averages per-batch CERs instead). Models whose encoder output depends on the
padding (unhooked conformers, E-Branchformer) are refused: they are encoded one at a time here.

    python local/cer_ctc_padding_check.py --exp egs/synth_words/exp --dump egs/synth_words/dump/extracted \\
        --set dev --systems teacher_conventional teacher_oracle
"""

import argparse
import sys
from pathlib import Path

import editdistance
import kaldiio
import numpy as np
import torch

from espnet_oracle.utils.datadir import read_kaldi_map, speech_scp
from espnet_oracle.utils.inference import encode_padded, greedy_path, load_model, pad, padding_sensitive


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", type=Path, required=True)
    parser.add_argument("--dump", type=Path, required=True, help="feature dir holding <set>/")
    parser.add_argument("--set", default="dev")
    parser.add_argument("--systems", nargs="+", required=True)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)

    feats = kaldiio.load_scp(str(speech_scp(args.dump / args.set)))
    text = read_kaldi_map(args.dump / args.set / "text")
    utts = sorted(text, key=lambda u: (feats[u].shape[0], u))
    from espnet2.text.build_tokenizer import build_tokenizer

    print("system\tset\tcer_all_padded_frames_%\tcer_own_frames_%")
    for system in args.systems:
        model, train_args = load_model(args.exp / system)
        model.eval()
        if padding_sensitive(model):
            raise SystemExit(f"{system}: its encoder output depends on the padding; this check needs one that does not")
        tokenizer = build_tokenizer(train_args.token_type, bpemodel=train_args.bpemodel)
        token_id = {t: i for i, t in enumerate(train_args.token_list)}
        space = token_id.get("<space>")
        # ESPnet's CER: token strings joined, <space> dropped
        chars = lambda ids: "".join(train_args.token_list[i] for i in ids if i != space)  # noqa: E731
        edits = {"all": 0, "own": 0}
        ref_chars = 0
        with torch.no_grad():
            for start in range(0, len(utts), args.batch_size):
                batch = utts[start:start + args.batch_size]
                speech, lengths = pad([feats[u] for u in batch], 0.0)
                refs = [[token_id.get(t, token_id.get("<unk>")) for t in tokenizer.text2tokens(text[u])] for u in batch]
                ref_pad, ref_lengths = pad([np.asarray(r, dtype=np.int64) for r in refs], -1)
                frames, frame_lengths, _ = encode_padded(model, speech, lengths, ref_pad, ref_lengths, batch)
                log_probs = model.ctc.log_softmax(frames)  # what ESPnet's ctc.argmax takes the argmax of
                for i, ref in enumerate(refs):
                    for kind, n in (("all", log_probs.size(1)), ("own", int(frame_lengths[i]))):
                        hyp, _ = greedy_path(log_probs[i, :n], model.blank_id)
                        edits[kind] += editdistance.eval(chars(ref), chars(hyp))
                    ref_chars += len(chars(ref))
        print(f"{system}\t{args.set}\t{100 * edits['all'] / ref_chars:.2f}\t{100 * edits['own'] / ref_chars:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
