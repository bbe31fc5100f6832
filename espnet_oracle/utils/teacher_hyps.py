"""Teacher hypotheses (1-best or weighted N-best token ids) for sequence-level KD.
Why it exists: sequence-level KD targets need a file format; no library has one.

On disk: a text file, one line per utterance, hypotheses separated by ``|``,
each a weight followed by its token ids (no blank)::

    utt1 1.0 5 3 9
    utt2 0.62 5 3 9 | 0.30 5 3 | 0.08 5 9
    utt3 1.0

(``utt3``: the teacher's hypothesis is empty.) A 1-best file is the N = 1
case with weight 1. ``espnet_oracle.bin.write_teacher_hyps`` writes it from a
teacher's decoding output; KDStudentModel uses the weights as given
(``sum_n w_n * CTC(student, y_n)``), so the writer normalises them to sum to 1.

Registered as ESPnet data type ``teacher_hyps``:
``--train_data_path_and_name_and_type <teacher_hyp.txt>,teacher_hyp,teacher_hyps``.
ESPnet's dataset and collate function need one array per utterance that pads
along its first axis, so each utterance's N-best list is packed into one
float32 vector ``[N, w_1, L_1, y_1 (L_1 ids), w_2, L_2, y_2, ...]``
(``pack_nbest``; ids are exact in float32 below 2**24); the collate function
pads it with 0 to (B, P) and adds ``teacher_hyp_lengths``; ``unpack_batch``
turns that back into per-utterance lists. The leading count makes the padding
irrelevant.
"""

import math
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from espnet_oracle.utils.datadir import atomic_write_text

DATA_TYPE = "teacher_hyps"
MAX_ID = 1 << 24  # float32 holds every integer below this exactly
SEPARATOR = "|"

Hypothesis = Tuple[float, List[int]]


def format_nbest(hyps: Sequence[Tuple[float, Sequence[int]]]) -> str:
    """One line's hypotheses part: ``w_1 ids | w_2 ids | ...``."""
    return f" {SEPARATOR} ".join(" ".join([repr(float(w))] + [str(int(i)) for i in ids]) for w, ids in hyps)


def parse_nbest(text: str, where: str = "") -> List[Hypothesis]:
    """Inverse of ``format_nbest``; refuses malformed weights or ids."""
    hyps: List[Hypothesis] = []
    for part in text.split(SEPARATOR):
        fields = part.split()
        if not fields:
            raise ValueError(f"{where}: empty hypothesis (each needs at least its weight)")
        try:
            weight = float(fields[0])
            ids = [int(f) for f in fields[1:]]
        except ValueError:
            raise ValueError(f"{where}: {part.strip()!r} is not 'weight id id ...'") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{where}: hypothesis weight {weight} must be finite and >= 0")
        if any(i < 0 or i >= MAX_ID for i in ids):
            raise ValueError(f"{where}: token ids must be in [0, {MAX_ID})")
        hyps.append((weight, ids))
    return hyps


def read_teacher_hyps(path) -> Dict[str, List[Hypothesis]]:
    """utt_id -> [(weight, ids), ...] from a teacher-hypotheses file."""
    out: Dict[str, List[Hypothesis]] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split(maxsplit=1)
            utt = fields[0]
            if utt in out:
                raise ValueError(f"{path}:{number}: utterance {utt!r} listed twice")
            out[utt] = parse_nbest(fields[1] if len(fields) > 1 else "", f"{path}:{number}")
    return out


def write_teacher_hyps(path, nbest: Mapping[str, Sequence[Tuple[float, Sequence[int]]]]) -> None:
    """Write (atomically, sorted by utterance id) what ``read_teacher_hyps`` reads."""
    lines = []
    for utt in sorted(nbest):
        if not nbest[utt]:
            raise ValueError(f"utterance {utt!r} has no hypothesis")
        line = f"{utt} {format_nbest(nbest[utt])}"
        parse_nbest(line.split(maxsplit=1)[1], f"utterance {utt}")  # refuse what cannot be read
        lines.append(line)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def pack_nbest(hyps: Sequence[Tuple[float, Sequence[int]]]) -> np.ndarray:
    """[(w, ids), ...] -> (P,) float32 ``[N, w_1, L_1, ids_1..., w_2, L_2, ...]``."""
    values: List[float] = [len(hyps)]
    for weight, ids in hyps:
        values.extend([float(weight), len(ids)])
        values.extend(float(i) for i in ids)
    return np.asarray(values, dtype=np.float32)


def unpack_nbest(packed: Sequence[float]) -> List[Hypothesis]:
    """Inverse of ``pack_nbest``; trailing padding is ignored."""
    values = [float(v) for v in packed]
    if not values:
        raise ValueError("empty packed hypothesis list")
    count, pos, hyps = int(values[0]), 1, []
    for _ in range(count):
        if pos + 2 > len(values):
            raise ValueError("packed hypothesis list is truncated")
        weight, length = values[pos], int(values[pos + 1])
        ids = [int(v) for v in values[pos + 2 : pos + 2 + length]]
        if len(ids) != length:
            raise ValueError("packed hypothesis list is truncated")
        hyps.append((weight, ids))
        pos += 2 + length
    return hyps


def unpack_batch(teacher_hyp: torch.Tensor, lengths: torch.Tensor) -> List[List[Hypothesis]]:
    """(B, P) padded packed vectors and (B,) their lengths -> per-utterance lists."""
    rows = teacher_hyp.detach().cpu().tolist()
    return [unpack_nbest(row[: int(n)]) for row, n in zip(rows, lengths.tolist())]


class TeacherHypReader(Mapping):
    """utt_id -> (P,) float32 packed N-best (see ``pack_nbest``), read once from the file."""

    def __init__(self, path: str):
        self.path = path
        self.nbest = read_teacher_hyps(path)

    def __getitem__(self, utt_id: str) -> np.ndarray:
        try:
            hyps = self.nbest[utt_id]
        except KeyError:
            raise KeyError(
                f"utterance {utt_id!r} has no teacher hypothesis in {self.path}: "
                "write it with espnet_oracle.bin.write_teacher_hyps for this data set"
            ) from None
        return pack_nbest(hyps)

    def __iter__(self) -> Iterator[str]:
        return iter(self.nbest)

    def __len__(self) -> int:
        return len(self.nbest)

    def keys(self):
        return self.nbest.keys()


def register_data_type() -> None:
    """Make ``teacher_hyps`` a data type of ESPnet's dataset (idempotent)."""
    from espnet2.train import dataset

    dataset.DATA_TYPES.setdefault(DATA_TYPE, dict(
        func=TeacherHypReader, kwargs=[],
        help="Teacher hypotheses for sequence-level KD, written by espnet_oracle.bin.write_teacher_hyps: "
             "'utt w ids | w ids ...' per line; "
             "each item is a packed float32 vector [N, w_1, L_1, ids..., ...]"))
