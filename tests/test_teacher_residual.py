"""local/teacher_residual_check.py: the mass beside a spike's word is counted on the transcript's
other words only when it is there, against the right chance level; non-word units are refused."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from espnet_oracle.utils.posteriors import PosteriorWriter, write_meta

SCRIPT = Path(__file__).resolve().parents[1] / "local" / "teacher_residual_check.py"
TOKENS = ["<blank>", "<unk>", "A", "B", "C", "D", "<sos/eos>"]


def write_teacher(out: Path, second: str) -> Path:
    """One utterance: a blank frame, then a spike on A with 10 % of the word mass on ``second``."""
    log_probs = np.full((2, len(TOKENS)), -30.0)
    log_probs[0, 0] = 0.0
    log_probs[1, TOKENS.index("A")] = np.log(0.9)
    log_probs[1, TOKENS.index(second)] = np.log(0.1)
    writer = PosteriorWriter(str(out), "1", fmt="dense")
    writer.write("utt1", log_probs)
    writer.close()
    shutil.copy(writer.scp, out / "post.scp")
    write_meta(str(out), format="dense", k=None, vocab_size=len(TOKENS))
    return out / "post.scp"


def test_residual_share_follows_the_transcript(tmp_path, capsys, load_script):
    check = load_script(SCRIPT)
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    (tmp_path / "text").write_text("utt1 A B\n")
    follows = write_teacher(tmp_path / "follows", "B")  # B is the transcript's other word
    hears = write_teacher(tmp_path / "hears", "C")      # C is not in the transcript
    assert check.main(["--text", str(tmp_path / "text"), "--token_list", str(tmp_path / "tokens.txt"),
                       "--teacher", f"follows={follows}", "--teacher", f"hears={hears}"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()[1:3]}
    # one spike frame, its word A in the transcript; chance: 1 other transcript word of 3 other words
    assert rows["follows"][1:] == ["1", "0.00", "0.9000", "100.0", "33.3", "1"]
    assert rows["hears"][1:] == ["1", "0.00", "0.9000", "0.0", "33.3", "1"]


def test_refuses_a_transcript_word_that_is_not_one_token(tmp_path, load_script):
    check = load_script(SCRIPT)
    (tmp_path / "tokens.txt").write_text("\n".join(TOKENS) + "\n")
    (tmp_path / "text").write_text("utt1 A BC\n")
    scp = write_teacher(tmp_path / "t", "B")
    with pytest.raises(SystemExit, match="utt1: BC not in --token_list"):
        check.main(["--text", str(tmp_path / "text"), "--token_list", str(tmp_path / "tokens.txt"),
                    "--teacher", f"t={scp}"])
