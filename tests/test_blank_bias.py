"""local/blank_bias_check.py: the blank offset moves the greedy decision as it says."""

from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "local" / "blank_bias_check.py"


def test_blank_bias_moves_the_greedy_decision(load_script):
    check = load_script(SCRIPT)
    tokens = ["<blank>", "ONE", "TWO"]
    # frame: blank, ONE by a margin of 2, blank, ONE by 0.5 (a weak spike), TWO by 3, blank
    log_probs = torch.log_softmax(torch.tensor([
        [3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [3.0, 0.0, 0.0],
        [0.0, 0.5, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]]), dim=-1)
    decode = lambda b: check.decode({"u": log_probs}, b, 0, tokens, "word")["u"]  # noqa: E731
    assert decode(0.0) == "ONE ONE TWO"
    assert decode(1.0) == "ONE TWO"  # the weak spike loses to blank
    assert decode(2.5) == "TWO"
    assert decode(10.0) == ""
    # blank never wins: every frame emits (ONE on the blank frames, first of a tie), runs collapse
    assert decode(-10.0) == "ONE TWO ONE"
    # the caller's log-probs are not changed
    assert torch.equal(log_probs.argmax(-1), torch.tensor([0, 1, 0, 1, 2, 0]))


def test_counts_split_errors_by_type(load_script):
    check = load_script(SCRIPT)
    assert check.counts("ONE TWO THREE", "ONE TWO THREE") == (3, 0, 0, 0)
    assert check.counts("ONE TWO THREE", "ONE FOUR") == (3, 1, 1, 0)
    assert check.counts("ONE", "ONE ONE TWO") == (1, 0, 0, 2)


def test_system_specs_are_checked_before_any_model_loads(tmp_path, capsys, load_script):
    check = load_script(SCRIPT)
    for seed in (1, 2):
        (tmp_path / f"student_seed{seed}").mkdir()
    seeds = f"{tmp_path}/student_seed1 {tmp_path}/student_seed2"
    for systems, message in ((["a=" + seeds, "a=" + seeds], "given before"),
                             ([f"a={tmp_path}/nothing*"], "matched none"),
                             (["no equals sign"], "matched none")):
        try:
            check.main(["--out", str(tmp_path / "out"), *[x for s in systems for x in ("--system", s)]])
        except SystemExit as stop:
            assert stop.code == 2
        else:
            raise AssertionError(f"{systems} accepted")
        assert message in capsys.readouterr().err
