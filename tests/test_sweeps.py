"""The sweep scripts (issue 7, items 8 and 11): a failed setting or variant does not stop a sweep,
the summary names it and the exit status says so; the KD sweep's matched-alpha control runs one
student per teacher with the KD weight computed from that teacher's non-blank share.

The sweeps run a copy of the script beside a fake run.sh that records its arguments.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def sweep_tree(tmp_path: Path, script: str, fail_when: str) -> tuple:
    """A copy of local/<script> beside a fake run.sh that records its arguments and fails
    when they contain ``fail_when``; returns (script path, calls file, recipe dir)."""
    tree = tmp_path / "tree"
    (tree / "local").mkdir(parents=True)
    shutil.copy(ROOT / "local" / script, tree / "local" / script)
    (tree / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "process_groups.sh", tree / "scripts")
    (tree / "path.sh").write_text(f". {ROOT}/path.sh\n")
    calls = tmp_path / "calls"
    write_exe(tree / "run.sh", (
        "#!/usr/bin/env bash\n"
        'all=$(printf "%s|" "$@")\n'
        f'echo "$all" >> {calls}\n'
        f'case "$all" in *"{fail_when}"*) echo fake failure; exit 1 ;; esac\n'
    ))
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    return tree / "local" / script, calls, recipe


def write_posteriors(out: Path, nonblank: int, frames: int = 10, vocab: int = 5):
    from espnet_oracle.utils.posteriors import PosteriorWriter, write_meta

    log_probs = np.full((frames, vocab), -8.0, dtype=np.float32)
    log_probs[:, 0] = -0.01  # blank wins ...
    log_probs[:nonblank, 0] = -8.0
    log_probs[:nonblank, 2] = -0.01  # ... except on the first `nonblank` frames
    writer = PosteriorWriter(str(out), "1", fmt="dense")
    writer.write("utt1", log_probs[: frames // 2])
    writer.write("utt2", log_probs[frames // 2:])
    writer.close()
    shutil.copy(writer.scp, out / "post.scp")
    write_meta(str(out), format="dense", k=None, vocab_size=vocab)


def test_matched_weight_formula():
    from espnet_oracle.bin.kd_matched_weight import matched_weight

    alpha, share = 0.5, 0.4
    matched = matched_weight(alpha, share)
    # same KD : CTC ratio as the nonblank run's effective alpha*s : (1 - alpha)
    assert matched / (1 - matched) == pytest.approx(alpha * share / (1 - alpha))
    assert matched_weight(0.5, 1.0) == pytest.approx(0.5)


def test_kd_sweep_goes_on_past_a_failed_setting_and_runs_the_matched_control(tmp_path):
    script, calls, recipe = sweep_tree(tmp_path, "kd_sweep.sh", "--kd_weight|0.9|")
    write_posteriors(recipe / "exp" / "teacher_conventional" / "posteriors" / "train_sp", nonblank=4)
    write_posteriors(recipe / "exp" / "teacher_oracle" / "posteriors" / "train_sp", nonblank=2)
    result = subprocess.run(
        [str(script), "--settings", "a0.9_t1_all a0.5_t1_nonblank a0.5_t1_matched", "--seeds", "1"],
        cwd=recipe, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: a0.9_t1_all" in result.stderr
    runs = calls.read_text().splitlines()
    assert len(runs) == 4  # the failed setting, nonblank, and one matched run per teacher
    assert any("--kd_frames|teacher_nonblank|" in r and "--kd_weight|0.5|" in r for r in runs)
    matched = [r for r in runs if "a0.5_t1_matched" in r]
    # s = 0.4 -> alpha' = 0.2/0.7; s = 0.2 -> alpha' = 0.1/0.6
    assert any("--student_systems|nokd convkd|" in r and "--kd_weight|0.2857|" in r for r in matched)
    assert any("--student_systems|nokd oraclekd|" in r and "--kd_weight|0.1667|" in r for r in matched)
    assert all("--kd_frames|all|" in r for r in matched)
    assert "s = 0.4000" in result.stdout and "0.2857" in result.stdout
    table = (recipe / "exp" / "kd_sweep" / "a0.5_t1_matched" / "matched_weight.tsv").read_text()
    assert "teacher_oracle\t0.2000\t10\t0.5\t0.1667" in table


def test_kd_sweep_reads_the_posteriors_of_the_students_training_set(tmp_path):
    """The default recipe trains the students on train_sp (speed perturbation): the sweep needs
    that set's posteriors, and --train_set names another."""
    script, calls, recipe = sweep_tree(tmp_path, "kd_sweep.sh", "--never-fails|")
    write_posteriors(recipe / "exp" / "teacher_conventional" / "posteriors" / "train", nonblank=4)
    write_posteriors(recipe / "exp" / "teacher_oracle" / "posteriors" / "train", nonblank=2)
    command = [str(script), "--settings", "a0.5_t1_matched", "--seeds", "1"]
    result = subprocess.run(command, cwd=recipe, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "posteriors/train_sp" in result.stderr, result.stdout + result.stderr
    assert not calls.exists()
    result = subprocess.run(command + ["--train_set", "train"], cwd=recipe, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(calls.read_text().splitlines()) == 2
    table = (recipe / "exp" / "kd_sweep" / "a0.5_t1_matched" / "matched_weight.tsv").read_text()
    assert "teacher_conventional\t0.4000\t10\t0.5\t0.2857" in table
    assert "teacher_oracle\t0.2000\t10\t0.5\t0.1667" in table


def test_kd_sweep_runs_the_current_recipes_own_run_sh(tmp_path):
    """From another recipe's dir (e.g. egs/synth_words, which has its own run.sh) the sweep trains
    through that run.sh, not the default recipe's; a words setting reaches it as teacher_nonblank_words."""
    script, calls, recipe = sweep_tree(tmp_path, "kd_sweep.sh", "--never-fails|")
    for t in ("teacher_conventional", "teacher_oracle"):
        (recipe / "exp" / t / "posteriors" / "train").mkdir(parents=True)
        (recipe / "exp" / t / "posteriors" / "train" / "post.scp").touch()
    own_calls = tmp_path / "own_calls"
    write_exe(recipe / "run.sh", f'#!/usr/bin/env bash\nprintf "%s|" "$@" >> {own_calls}\necho >> {own_calls}\n')
    result = subprocess.run([str(script), "--settings", "a0.5_t1_words", "--seeds", "1", "--train_set", "train"],
                            cwd=recipe, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not calls.exists()
    runs = own_calls.read_text().splitlines()
    assert len(runs) == 1
    assert "--exp|exp/kd_sweep/a0.5_t1_words|" in runs[0]
    assert "--kd_weight|0.5|--kd_frames|teacher_nonblank_words|" in runs[0]


def test_anticopy_sweep_goes_on_past_a_failed_variant(tmp_path):
    script, calls, recipe = sweep_tree(tmp_path, "anticopy_sweep.sh", "exp/anticopy/aux_ctc|")
    (recipe / "exp" / "teacher_conventional").mkdir(parents=True)
    (recipe / "exp" / "teacher_conventional" / ".done").touch()
    result = subprocess.run(
        [str(script), "--variants", "posenc aux_ctc expansion"],
        cwd=recipe, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(calls.read_text().splitlines()) == 3  # every variant ran
    assert "FAILED" in result.stderr and "aux_ctc" in result.stderr
    assert (recipe / "exp" / "anticopy" / "failed_variants").read_text().split() == ["aux_ctc"]
    assert (recipe / "exp" / "anticopy" / "summary.tsv").exists()


def test_anticopy_summary_leaves_out_a_failed_variants_old_results(tmp_path):
    """A variant that fails this time must not enter the table with the numbers an earlier
    run left in its teacher_eval dir (the summary says it is not in the table)."""
    script, calls, recipe = sweep_tree(tmp_path, "anticopy_sweep.sh", "exp/anticopy/aux_ctc|")
    (recipe / "exp" / "teacher_conventional").mkdir(parents=True)
    (recipe / "exp" / "teacher_conventional" / ".done").touch()
    for variant in ("posenc", "aux_ctc"):
        old = recipe / "exp" / "anticopy" / variant / "teacher_eval"
        old.mkdir(parents=True)
        (old / "summary.tsv").write_text(
            "system\tset\tprobe\tmetric\tvalue\n"
            f"teacher_oracle\ttest\ttrue_transcript\tcer\t{'1.0' if variant == 'posenc' else '99.0'}\n"
        )
    result = subprocess.run(
        [str(script), "--variants", "posenc aux_ctc"],
        cwd=recipe, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    rows = (recipe / "exp" / "anticopy" / "summary.tsv").read_text().splitlines()
    variants = {row.split("\t")[0] for row in rows[1:]}
    assert "posenc" in variants
    assert "aux_ctc" not in variants, rows


def test_variant_sweep_goes_on_past_a_failed_variant(tmp_path):
    """local/variant_sweep.sh: the reference students, one run.sh per variant (its systems and options,
    its own exp dir, the teachers linked), RESULTS.md last; a failed variant is listed in
    exp/variants/summary and the exit status is 1; run.sh options after -- reach every run."""
    script, calls, recipe = sweep_tree(tmp_path, "variant_sweep.sh", "--exp|exp/variants/guided|")
    for t in ("teacher_conventional", "teacher_oracle"):
        (recipe / "exp" / t / "posteriors" / "train_sp").mkdir(parents=True)
        (recipe / "exp" / t / "valid.loss.ave.pth").touch()
        (recipe / "exp" / t / "posteriors" / "train_sp" / "post.scp").touch()
    result = subprocess.run(
        [str(script), "--seeds", "1 2", "--nbest", "3", "--", "--student_train_opts", "--max_epoch 1"],
        cwd=recipe, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: guided" in result.stderr
    runs = calls.read_text().splitlines()
    variants = ["renorm", "guided", "kd_guided", "seqkd", "seqkd_nbest", "avgkd", "selfdistill"]
    assert len(runs) == 1 + len(variants) + 1  # reference students, every variant, RESULTS.md
    assert runs[0].startswith("--stage|8|--stop_stage|9|--seeds|1 2|")
    assert runs[-1].startswith("--stage|10|--stop_stage|10|--seeds|1 2|")
    assert all(r.endswith("|--student_train_opts|--max_epoch 1|") for r in runs)
    by_variant = {v: r for v in variants for r in runs if f"--exp|exp/variants/{v}|" in r}
    assert set(by_variant) == set(variants)
    for v, r in by_variant.items():
        assert f"--stage|7|--stop_stage|10|--exp|exp/variants/{v}|--seeds|1 2|" in r
        linked = recipe / "exp" / "variants" / v / "teacher_oracle"
        assert linked.resolve() == (recipe / "exp" / "teacher_oracle").resolve()
    assert "--student_systems|convkd oraclekd|--kd_frames|teacher_nonblank_renorm|" in by_variant["renorm"]
    assert "--student_systems|convseqkd oracleseqkd|--seq_kd_nbest|1|" in by_variant["seqkd"]
    assert "--student_systems|convseqkd oracleseqkd|--seq_kd_nbest|3|" in by_variant["seqkd_nbest"]
    assert "--student_systems|selfdistill|" in by_variant["selfdistill"]
    summary = [line.split("\t") for line in (recipe / "exp" / "variants" / "summary").read_text().splitlines()]
    assert summary[0] == ["variant", "status", "seconds", "student_systems", "log"]
    status = {row[0]: row[1] for row in summary[1:]}
    assert status == {"reference": "done", **{v: "done" for v in variants}, "guided": "FAILED", "results": "done"}

    # an unknown variant is refused before anything runs
    calls.unlink()
    result = subprocess.run([str(script), "--variants", "guided nosuch"], cwd=recipe, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "unknown variant 'nosuch'" in result.stderr
    assert not calls.exists()
