"""local/insertion_check.py: inserted words are placed in the true word their spike lies in."""

from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "local" / "insertion_check.py"


def write(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def make_decode(model: Path, hyps: dict, frames: dict) -> None:
    decode = model / "decode_test_greedy"
    write(decode / "text", [f"{u} {h}".rstrip() for u, h in hyps.items()])
    write(decode / "token", [f"{u} {h}".rstrip() for u, h in hyps.items()])
    write(decode / "ctc_frames", [f"{u} {' '.join(map(str, f))}".rstrip() for u, f in frames.items()])
    write(decode / "frame_shift_ms", ["40"])
    write(decode / "frame_offset_ms", ["42.5"])  # a frame's time: 42.5 ms + 40 ms t


@pytest.fixture
def recipe(tmp_path):
    # a: NINE spans 0.0-0.6 s, ONE 0.8-1.2 s; b: TWO 0.2-0.5 s
    write(tmp_path / "data" / "test" / "text", ["a NINE ONE", "b TWO"])
    write(tmp_path / "data" / "test" / "word_align",
          ["a 0 NINE 0.0 0.6", "a 1 ONE 0.8 1.2", "b 0 TWO 0.2 0.5"])
    return tmp_path


def test_insertions_are_placed_in_their_host_word(recipe, capsys, load_script):
    check = load_script(SCRIPT)
    # model 1: FIVE fires at frame 10 (0.4425 s, inside NINE), SIX at frame 14 (0.6025 s: in the gap,
    # inside NINE only if the frame offset were left out)
    make_decode(recipe / "exp" / "m_seed1", {"a": "NINE FIVE SIX ONE", "b": "TWO"}, {"a": [2, 10, 14, 25], "b": [8]})
    # model 2: FIVE again inside NINE (frame 12, 0.5225 s), and a substitution
    make_decode(recipe / "exp" / "m_seed2", {"a": "NINE FIVE ONE", "b": "THREE"}, {"a": [3, 12, 25], "b": [8]})
    (words, sub, dele, ins), hosts = check.model_insertions(
        recipe / "exp" / "m_seed2" / "decode_test_greedy",
        check.read_lists(recipe / "data" / "test" / "text"),
        check.read_word_align(recipe / "data" / "test" / "word_align"))
    assert (words, sub, dele, ins) == (3, 1, 0, 1) and hosts == {("I", "FIVE", "NINE"): 1, ("S", "TWO", "THREE"): 1}
    assert check.main(["--system", f"two models={recipe}/exp/m_seed*", "--set", "test",
                       "--data", str(recipe / "data"), "--out", str(recipe / "out")]) == 0
    rows = (recipe / "out" / "test.tsv").read_text().splitlines()
    assert rows[0] == "system\ttype\tword\tinside_word_or_substitute\tcount"
    assert sorted(rows[1:]) == ["two models\tI\tFIVE\tNINE\t2", "two models\tI\tSIX\t-\t1",
                                "two models\tS\tTWO\tTHREE\t1"]
    printed = capsys.readouterr().out
    assert "3 insertions, most: FIVE in NINE 2, SIX in - 1; substitutions, most: TWO -> THREE 1" in printed
    assert "sub 16.7 % del 0.0 % ins 50.0 %" in printed  # model 1: 0/3, 0/3, 2/3; model 2: 1/3, 0/3, 1/3


def test_spike_positions_in_the_word(recipe, capsys, load_script):
    check = load_script(SCRIPT)
    # NINE (0.0-0.6 s) fires at frames 2 and 3 (0.1225, 0.1625 s), ONE (0.8-1.2 s) at frame 25
    # (1.0425 s) twice, TWO (0.2-0.5 s) at frame 8 (0.3625 s); model 2's b is wrong: no position
    make_decode(recipe / "exp" / "m_seed1", {"a": "NINE FIVE SIX ONE", "b": "TWO"}, {"a": [2, 10, 14, 25], "b": [8]})
    make_decode(recipe / "exp" / "m_seed2", {"a": "NINE FIVE ONE", "b": "THREE"}, {"a": [3, 12, 25], "b": [8]})
    refs, word_align = (check.read_lists(recipe / "data" / "test" / "text"),
                        check.read_word_align(recipe / "data" / "test" / "word_align"))
    positions = check.spike_positions(recipe / "exp" / "m_seed1" / "decode_test_greedy", refs, word_align)
    assert sorted(positions) == ["NINE", "ONE", "TWO"]  # the wrong words FIVE, SIX: none
    assert [p for w in ("NINE", "ONE", "TWO") for p in positions[w]] == pytest.approx([0.1225 / 0.6, 0.2425 / 0.4,
                                                                                      0.1625 / 0.3])
    assert check.main(["--system", f"two={recipe}/exp/m_seed*", "--set", "test", "--positions",
                       "--data", str(recipe / "data"), "--out", str(recipe / "out")]) == 0
    assert "two: spike position in the word (correct words): NINE 0.24, ONE 0.61, TWO 0.54" in capsys.readouterr().out


def test_refuses_subword_decodes(recipe, load_script):
    check = load_script(SCRIPT)
    make_decode(recipe / "exp" / "m_seed1", {"a": "NINE ONE", "b": "TWO"}, {"a": [2, 25], "b": [8]})
    token_file = recipe / "exp" / "m_seed1" / "decode_test_greedy" / "token"
    write(token_file, ["a ▁NI NE ▁ONE", "b ▁TWO"])  # BPE pieces: one frame per piece, not per word
    with pytest.raises(SystemExit, match="utterance a: .*word units"):
        check.main(["--system", f"m={recipe}/exp/m_seed*", "--set", "test",
                    "--data", str(recipe / "data"), "--out", str(recipe / "out")])
