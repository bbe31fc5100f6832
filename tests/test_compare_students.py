"""local/compare_students.py: students of different experiment dirs side by side, bootstrap across dirs."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from espnet_oracle.bin.score import score

SCRIPT = Path(__file__).resolve().parents[1] / "local" / "compare_students.py"
spec = importlib.util.spec_from_file_location("compare_students", SCRIPT)
compare_students = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_students)

REFS = {f"u{i:02d}": "ONE TWO THREE" for i in range(30)}


def write(path: Path, table: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u} {t}\n" for u, t in table.items()), encoding="utf-8")


def student(root: Path, name: str, hyps: dict, onset_ms: float, chosen=None) -> None:
    """A scored student seed dir ``root/name``; the references are in ``root/../data``."""
    for set_name in ("test", "test_unseen"):
        decode = root / name / f"decode_{set_name}_greedy"
        write(decode / "text", hyps)
        score(root.parent / "data", decode)
        scores = json.loads((decode / "scores.json").read_text())
        # as score.py writes it with word_align: |onset| of 60 words per seed, sd 10 ms
        scores["spike"] = {"n_onsets": 60, "mean_abs_onset_offset_ms": onset_ms, "abs_onset_offset_sd_ms": 10.0}
        (decode / "scores.json").write_text(json.dumps(scores))
    if chosen is not None:  # ESPnet's checkpoint: the reporter's per-epoch stats
        stats = {epoch: {"train": {"kd_shift_chosen": value}} for epoch, value in enumerate(chosen, 1)}
        torch.save({"reporter": {"stats": stats}}, root / name / "checkpoint.pth")


def test_tables_and_bootstrap_across_dirs(tmp_path, capsys):
    write(tmp_path / "data" / "text", REFS)
    worse = {u: ("ONE TWO" if i % 2 else t) for i, (u, t) in enumerate(REFS.items())}  # 1 error in 2 utts
    for seed in (1, 2):
        student(tmp_path / "exp", f"student_a_seed{seed}", REFS, 100 + seed, chosen=[0.5, 0.25 * seed])
        student(tmp_path / "exp_other", f"student_b_seed{seed}", worse, 150)
    compare_students.main(["--system", f"A={tmp_path}/exp/student_a_seed*",
                           "--system", f"B={tmp_path}/exp_other/student_b_seed*", "--compare", "A:B"])
    out = capsys.readouterr().out
    assert "| A | 2 | 102 [100, 103] | 0.00 ± 0.00 | 0.00 ± 0.00 | 0.38 ± 0.18 |" in out  # last epoch: 0.25, 0.5
    assert "| B | 2 | 150 [148, 152] | 16.67 ± 0.00 | 16.67 ± 0.00 | – |" in out
    assert "| test | A vs B | 0.00 | 16.67 | -16.67 |" in out and "< 0.001 |" in out


def test_refuses_unknown_names_and_unequal_seeds(tmp_path):
    write(tmp_path / "data" / "text", REFS)
    student(tmp_path / "exp", "student_a_seed1", REFS, 100)
    student(tmp_path / "exp", "student_b_seed1", REFS, 100)
    student(tmp_path / "exp", "student_b_seed2", REFS, 100)
    a, b = f"A={tmp_path}/exp/student_a_seed*", f"B={tmp_path}/exp/student_b_seed*"
    with pytest.raises(SystemExit, match="both names given by --system"):
        compare_students.main(["--system", a, "--compare", "A:C"])
    with pytest.raises(SystemExit, match="matching at least one dir"):
        compare_students.main(["--system", f"C={tmp_path}/nothing*"])
    with pytest.raises(SystemExit, match="'A' has 1 seeds, 'B' 2"):
        compare_students.main(["--system", a, "--system", b, "--compare", "A:B"])
