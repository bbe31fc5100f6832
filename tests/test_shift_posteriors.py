"""local/shift_posteriors.py: a dump moved N frames keeps each utterance's frame count, moves its
spikes by exactly N, keeps the stamp (the KD checks still pass) and is not shifted twice."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from espnet_oracle.utils.posteriors import PosteriorWriter, TeacherPosteriorReader, write_meta

SCRIPT = Path(__file__).resolve().parents[1] / "local" / "shift_posteriors.py"


def test_shift_moves_rows_and_keeps_length(load_script):
    shift = load_script(SCRIPT).shift
    rows = np.arange(5)[:, None]
    assert shift(rows, 1)[:, 0].tolist() == [0, 0, 1, 2, 3]
    assert shift(rows, -2)[:, 0].tolist() == [2, 3, 4, 4, 4]
    assert shift(rows, 9)[:, 0].tolist() == [0, 0, 0, 0, 0]
    assert shift(rows, -9)[:, 0].tolist() == [4, 4, 4, 4, 4]
    assert shift(rows, 0)[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_dump_is_shifted_with_its_stamp(tmp_path, load_script):
    check = load_script(SCRIPT)
    vocab, frames = 5, 6
    log_probs = np.full((frames, vocab), -9.0)
    log_probs[:, 0] = -0.01
    log_probs[2], log_probs[2, 3] = -9.0, -0.01  # one spike, token 3 at frame 2
    src = tmp_path / "posteriors" / "train"
    writer = PosteriorWriter(str(src), "1", fmt="topk", k=3)
    writer.write("utt1", log_probs)
    writer.close()
    shutil.copy(writer.scp, src / "post.scp")
    (src / "utt2num_frames").write_text(f"utt1 {frames}\n")
    write_meta(str(src), format="topk", k=3, vocab_size=vocab, stamp={"features_sha256": "f"})
    out = tmp_path / "shifted" / "train"
    assert check.main(["--in_dir", str(src), "--out_dir", str(out), "--frames", "-1"]) == 0
    moved = TeacherPosteriorReader(str(out / "post.scp"))["utt1"]
    assert moved.shape == (frames, vocab)
    assert np.nonzero(moved.argmax(1) != 0)[0].tolist() == [1]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["shift_frames"] == -1 and meta["stamp"] == {"features_sha256": "f"}
    assert (out / "utt2num_frames").read_text() == f"utt1 {frames}\n"
    with pytest.raises(SystemExit, match="already shifted"):
        check.main(["--in_dir", str(out), "--out_dir", str(tmp_path / "twice"), "--frames", "1"])
