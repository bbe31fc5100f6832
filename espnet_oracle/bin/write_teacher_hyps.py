"""Write a teacher's hypotheses as token ids, for sequence-level KD.
Why it exists: sequence-level KD needs teacher hypotheses as a file ESPnet's data loader reads.

Reads a teacher's decoding output — ``token`` files as ``espnet_oracle.bin.decode``
writes them (``utt_id tok tok ...``; the Oracle Teacher's is its decoding with the
true transcript fed) — and the token list, and writes the file of the
``teacher_hyps`` data type (``espnet_oracle/utils/teacher_hyps.py``)::

    utt_id w_1 id id ... | w_2 id id ... | ...

1-best: one ``--hyp`` file, weight 1. N-best: one ``--hyp`` file per rank (rank 1
first; lower ranks may lack utterances that had fewer hypotheses), weighted by
``--weights`` (one per rank), or by per-utterance scores (``--score`` files, one
per rank, ``utt_id log_score``) as ``softmax(score / --score_temperature)`` over
the utterance's hypotheses; uniform when neither is given. Weights are
normalised to sum to 1 per utterance; identical hypotheses are merged (weights
added). Tokens missing from the token list, and blank, are refused.
"""

import argparse
import math
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from espnet_oracle.utils.datadir import read_kaldi_map
from espnet_oracle.utils.teacher_hyps import write_teacher_hyps

BLANK = "<blank>"


def tokens_to_ids(tokens: Sequence[str], token_ids: Dict[str, int], where: str) -> List[int]:
    ids = []
    for token in tokens:
        if token == BLANK:
            raise ValueError(f"{where}: hypothesis contains {BLANK}, which is no CTC target")
        if token not in token_ids:
            raise ValueError(f"{where}: token {token!r} is not in the token list")
        ids.append(token_ids[token])
    return ids


def build_nbest(hyps: Sequence[Dict[str, str]], token_list: Sequence[str],
                weights: Optional[Sequence[float]] = None, scores: Optional[Sequence[Dict[str, str]]] = None,
                score_temperature: float = 1.0, names: Optional[Sequence[str]] = None,
                ) -> Dict[str, List[Tuple[float, List[int]]]]:
    """utt -> [(weight, ids), ...] from per-rank ``utt -> "tok tok ..."`` maps (rank 1 first; it defines
    the utterances), in the teacher's (= student's) ``token_list``, weighted by ``weights`` (one per rank)
    or ``scores`` (one ``utt -> log score`` map per rank); ``names``: per rank, for error messages."""
    if not hyps:
        raise ValueError("no hypotheses given")
    names = list(names or [f"rank {n + 1}" for n in range(len(hyps))])
    if weights is not None and scores is not None:
        raise ValueError("give weights or scores, not both")
    if weights is not None and len(weights) != len(hyps):
        raise ValueError(f"{len(weights)} weights for {len(hyps)} hypothesis ranks")
    if weights is not None and (any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ValueError(f"weights must be >= 0 and not all 0: {list(weights)}")
    if scores is not None and len(scores) != len(hyps):
        raise ValueError(f"{len(scores)} score files for {len(hyps)} hypothesis ranks")
    if score_temperature <= 0:
        raise ValueError(f"score_temperature must be > 0: {score_temperature}")
    token_ids = {token: i for i, token in enumerate(token_list)}
    extra = sorted(set().union(*hyps[1:]) - set(hyps[0]))
    if extra:
        raise ValueError(f"{names[1]}...: utterances without a rank-1 hypothesis: {extra[:5]}")
    out = {}
    for utt in sorted(hyps[0]):
        ranked = []  # (raw weight or log score, ids)
        for rank, rank_hyps in enumerate(hyps):
            if utt not in rank_hyps:
                continue
            ids = tokens_to_ids(rank_hyps[utt].split(), token_ids, f"{names[rank]}: {utt}")
            if scores is not None:
                if utt not in scores[rank]:
                    raise ValueError(f"no score of {utt} for {names[rank]}")
                value = float(scores[rank][utt]) / score_temperature
            else:
                value = weights[rank] if weights is not None else 1.0
            ranked.append((value, ids))
        if scores is not None:
            top = max(v for v, _ in ranked)
            ranked = [(math.exp(v - top), ids) for v, ids in ranked]
        merged: Dict[Tuple[int, ...], float] = {}
        for weight, ids in ranked:
            merged[tuple(ids)] = merged.get(tuple(ids), 0.0) + weight
        total = sum(merged.values())
        if total <= 0:
            raise ValueError(f"{utt}: all its hypotheses have weight 0")
        out[utt] = [(w / total, list(ids)) for ids, w in merged.items()]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token_list", required=True)
    parser.add_argument("--hyp", action="append", required=True,
                        help="decoding output 'utt tok tok ...' (repeat per rank, rank 1 first)")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="one weight per --hyp rank")
    parser.add_argument("--score", action="append", default=None,
                        help="'utt log_score' per --hyp rank (repeat; weights = softmax)")
    parser.add_argument("--score_temperature", type=float, default=1.0)
    parser.add_argument("--out", required=True, help="output file, e.g. dump/teacher_hyp/train/teacher_hyp.txt")
    args = parser.parse_args(argv)
    try:
        token_list = [line.rstrip("\n") for line in open(args.token_list, encoding="utf-8")]
        hyps = [read_kaldi_map(path) for path in args.hyp]
        scores = [read_kaldi_map(path) for path in args.score] if args.score else None
        nbest = build_nbest(hyps, token_list, args.weights, scores, args.score_temperature,
                            names=args.hyp)
        write_teacher_hyps(args.out, nbest)
    except (OSError, ValueError) as error:
        sys.exit(f"write_teacher_hyps: {error}")
    print(f"write_teacher_hyps: {len(nbest)} utterances, up to "
          f"{max((len(h) for h in nbest.values()), default=0)} hypotheses each -> {args.out}")


if __name__ == "__main__":
    main()
