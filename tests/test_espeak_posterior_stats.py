"""egs/espeak_sentences/local/posterior_stats.py on hand-made top-k posteriors: one utterance the
greedy path gets right (with a repeated piece split by a blank), one with a wrong piece."""

import os
from pathlib import Path

import kaldiio
import numpy as np

from espnet_oracle.utils.posteriors import topk_pack, write_meta

SCRIPT = Path(__file__).resolve().parents[1] / "egs" / "espeak_sentences" / "local" / "posterior_stats.py"
TOKENS = ["<blank>", "<unk>", "\u2581A", "B", "\u2581C", "<sos/eos>"]


def frames(path, peak=0.999):
    """(T, V) log-probs whose argmax follows ``path`` with top probability ``peak``."""
    out = np.full((len(path), len(TOKENS)), (1 - peak) / (len(TOKENS) - 1))
    out[np.arange(len(path)), path] = peak
    return np.log(out)


def test_greedy_error_rates_and_peakiness(tmp_path, capsys, load_script):
    (tmp_path / "data" / "token_list" / "bpe").mkdir(parents=True)
    (tmp_path / "data" / "token_list" / "bpe" / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    (tmp_path / "data" / "train").mkdir()
    (tmp_path / "data" / "train" / "text").write_text("u1 AB C\nu2 AB C\n")
    post = tmp_path / "exp" / "teacher_x" / "posteriors" / "train"
    post.mkdir(parents=True)
    right = frames([0, 2, 2, 3, 0, 4, 4, 0])             # "▁A B ▁C" -> AB C
    wrong = frames([2, 0, 2, 0, 4, 0, 0, 0], peak=0.501)  # "▁A ▁A ▁C" -> A A C
    kaldiio.save_ark(str(post / "post.ark"), {"u1": topk_pack(right, 3), "u2": topk_pack(wrong, 3)},
                     scp=str(post / "post.scp"), write_function="numpy")  # as dump_posteriors writes
    write_meta(str(post), format="topk", k=3, vocab_size=len(TOKENS))
    module = load_script(SCRIPT)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        module.main(["--teachers", "teacher_x"])
    finally:
        os.chdir(cwd)
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    cells = [c.strip() for c in row[1:-1]]
    # u2: hyp "A A C" vs ref "AB C": 2 word errors of 4 reference words in all; chars "AAC" vs
    # "ABC": 1 of 6 characters
    assert cells[:4] == ["teacher_x", "train", "50.00", "16.67"]
    # top probs: 8 frames at 0.999, 8 at 0.501; non-blank frames above 0.99: u1's 5 of u1+u2's 8
    assert abs(float(cells[4]) - 0.75) <= 0.001
    assert cells[5] == "50.0 %" and cells[6] == f"{100 * 5 / 8:.1f} %"
