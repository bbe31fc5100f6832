"""local/teacher_train_errors.py: the greedy path of stored posteriors against the transcripts."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from espnet_oracle.utils.posteriors import PosteriorWriter, merge_shards

SCRIPT = Path(__file__).resolve().parents[1] / "local" / "teacher_train_errors.py"
spec = importlib.util.spec_from_file_location("teacher_train_errors", SCRIPT)
teacher_train_errors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(teacher_train_errors)

TOKENS = ["<blank>", "<unk>", "ONE", "TWO", "THREE", "<sos/eos>"]
TEXT = {"u1": "ONE TWO", "u2": "TWO TWO THREE", "u3": "THREE"}


def log_probs(path) -> np.ndarray:
    """(T', V) log-probs whose argmax per frame is ``path`` (token ids; 0 = blank)."""
    logits = np.full((len(path), len(TOKENS)), -4.0)
    logits[np.arange(len(path)), path] = 4.0
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def make_run(root: Path, paths: dict, fmt: str) -> None:
    (root / "dump" / "train").mkdir(parents=True)
    (root / "dump" / "train" / "text").write_text("".join(f"{u} {t}\n" for u, t in TEXT.items()))
    teacher = root / "exp" / "teacher_conventional"
    teacher.mkdir(parents=True)
    (teacher / "config.yaml").write_text(yaml.safe_dump(dict(token_list=TOKENS, token_type="word", bpemodel=None)))
    out = teacher / "posteriors" / "train"
    writer = PosteriorWriter(out, "1", fmt=fmt, k=3)
    for utt, path in paths.items():
        writer.write(utt, log_probs(path))
    writer.close()
    merge_shards(out, 1, dict(format=fmt, k=3, vocab_size=len(TOKENS), stamp={}))


def run(root: Path, capsys) -> list:
    teacher_train_errors.main(["--exp", str(root / "exp"), "--dump", str(root / "dump"), "--set", "train",
                               "--teachers", "teacher_conventional"])
    return capsys.readouterr().out.splitlines()[1].split("\t")


@pytest.mark.parametrize("fmt", ["topk", "dense"])
def test_counts_wrong_utterances_and_token_errors(tmp_path, capsys, fmt):
    right = {"u1": [0, 2, 2, 0, 3], "u2": [3, 0, 3, 4, 4], "u3": [0, 4, 0]}
    make_run(tmp_path / "right", right, fmt)
    assert run(tmp_path / "right", capsys)[2:] == ["3", "0.00", "0.00"]
    # u2 loses the blank between its two TWOs (CTC collapses them into one): 1 deletion of 6 tokens
    wrong = dict(right, u2=[3, 3, 3, 4, 4])
    make_run(tmp_path / "wrong", wrong, fmt)
    assert run(tmp_path / "wrong", capsys)[2:] == ["3", "33.33", "16.67"]


def test_refuses_transcripts_without_posteriors(tmp_path):
    make_run(tmp_path, {"u1": [2, 0, 3], "u2": [3, 0, 3, 4]}, "topk")
    with pytest.raises(SystemExit, match="no posteriors for 1 of 3 utterances, e.g. u3"):
        teacher_train_errors.main(["--exp", str(tmp_path / "exp"), "--dump", str(tmp_path / "dump"),
                                   "--set", "train", "--teachers", "teacher_conventional"])
