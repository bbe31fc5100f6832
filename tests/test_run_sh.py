"""The default recipe's run.sh: where it runs and how --quick combines with other options.

Only option handling runs (stage 11 of 10: no stage does any work), so this takes seconds.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def recipe_dir(tmp_path: Path) -> Path:
    for name in ("run.sh", "conf", "local", "db.sh"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "run.sh"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_quick_anywhere_on_the_command_line_and_later_options_win(tmp_path):
    recipe = recipe_dir(tmp_path)
    done = run(recipe, "--stage", "11", "--quick", "--seeds", "2")
    assert done.returncode == 0, done.stderr
    logged = (recipe / "exp_quick" / "commands.log").read_text()
    assert "--exp exp_quick" in logged and "--decode_modes greedy" in logged
    # the command line's --seeds comes after --quick's own --seeds 1, so the pipeline takes 2
    assert logged.index("--seeds 1") < logged.index("--seeds 2")
    assert not (recipe / "exp").exists()


def test_refuses_a_dir_without_the_recipe(tmp_path):
    done = run(tmp_path, "--stage", "11")
    assert done.returncode != 0
    assert f"no local/data.sh in {tmp_path}" in done.stderr
    assert not (tmp_path / "exp").exists()
    helped = run(tmp_path, "--help")
    assert helped.returncode == 0
    # the values in effect: the recipe's, not only the pipeline's defaults (--fs 16000, --kd_frames all)
    assert "--fs 8000 " in helped.stdout and "--kd_frames teacher_nonblank_words " in helped.stdout
    assert '--test_sets "test test_unseen" ' in helped.stdout
