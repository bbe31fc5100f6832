"""RESULTS.md (stage 10) must say what every system was trained with and how many seeds a
number averages: no cheap model needed, only the files the pipeline leaves in exp/."""

import json
import shutil
from pathlib import Path

import torch
import yaml

from espnet_oracle.bin import make_results


def system(exp: Path, name: str, config: dict, options=(), scores=None, per_utt=None):
    d = exp / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (d / "stamp.json").write_text(json.dumps(dict(kind="train", config="conf/x.yaml", config_sha256="0" * 64,
                                                  options=list(options), inputs={})), encoding="utf-8")
    for set_name, values in (scores or {}).items():
        decode = d / f"decode_{set_name}_greedy"
        decode.mkdir()
        (decode / "scores.json").write_text(json.dumps(values), encoding="utf-8")
    for set_name, counts in (per_utt or {}).items():  # score.py's score_wer/result.txt
        result = d / f"decode_{set_name}_greedy" / "score_wer" / "result.txt"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text("WER = ...\n" + "".join(f"{u}\terrors={e} n={n}\tref=A\thyp=B\n"
                                                   for u, (e, n) in counts.items()), encoding="utf-8")
    return d


def row_of(text: str, start: str, after: str) -> str:
    lines = text.splitlines()
    begin = lines.index(after)
    return next(line for line in lines[begin:] if line.startswith(start))


def test_settings_table_lists_options_beyond_the_kd_settings(tmp_path):
    """A student trained with Guided CTC / sequence-level KD (same dir name as the plain KD
    student) and an Oracle Teacher trained with anti-copy overrides must be told apart."""
    exp = tmp_path / "exp"
    system(exp, "teacher_oracle", dict(model="oracle_teacher", seed=0, max_epoch=3,
                                       model_conf=dict(ctc_weight=1.0, aux_source_ctc_weight=0.0)),
           options=["--encoder_conf", "target_positional_encoding=true", "--seed", "0"])
    system(exp, "student_oraclekd_a0.5_t1_all_seed1",
           dict(model="kd_student", seed=1, max_epoch=3,
                model_conf=dict(ctc_weight=1.0, kd_weight=0.5, kd_temperature=1.0, kd_frames="all",
                                guided_ctc_weight=0.3, seq_kd_weight=0.0)))
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    title = "### What each system was trained with"
    student = row_of(text, "| student, KD from Oracle Teacher", title)
    assert "guided_ctc_weight=0.3" in student
    teacher = row_of(text, "| Oracle Teacher", title)
    assert "target_positional_encoding=true" in teacher


def test_seed_count_and_means_say_when_seeds_are_missing(tmp_path):
    """A group of three seed dirs of which one has no scores averages two: the table must not
    present it as a three-seed mean."""
    exp = tmp_path / "exp"
    config = dict(model="espnet", seed=1, max_epoch=3, model_conf=dict(ctc_weight=1.0))
    system(exp, "student_nokd_seed1", config, scores={"test": dict(wer=10.0, cer=5.0)})
    system(exp, "student_nokd_seed2", config, scores={"test": dict(wer=12.0, cer=6.0)})
    system(exp, "student_nokd_seed3", config)  # training or decoding never finished
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1 2 3", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    row = row_of(text, "| student, no KD", "## Systems")
    assert "11.00 ± 1.41" in row
    assert "2 of 3 seeds" in row, row


def test_copy_probe_table_refuses_teacher_eval_of_other_teachers(tmp_path):
    """exp/teacher_eval (stage 6) made with earlier teachers must not be published beside
    retrained ones: stage 10 names it stale instead of printing its numbers."""
    exp = tmp_path / "exp"
    config = dict(model="espnet", seed=0, max_epoch=3, model_conf=dict(ctc_weight=1.0))
    for name in ("teacher_conventional", "teacher_oracle"):
        d = system(exp, name, config)
        torch.save({"w": torch.zeros(2)}, d / "valid.loss.ave.pth")
    from espnet_oracle.bin.teacher_eval import teacher_models

    models = teacher_models(exp / "teacher_conventional", exp / "teacher_oracle")
    entry = {"teacher_conventional/audio_only": dict(cer=12.5),
             "teacher_oracle/true_transcript": dict(cer=3.25)}
    (exp / "teacher_eval").mkdir()
    summary = exp / "teacher_eval" / "summary.json"
    summary.write_text(json.dumps(dict(sets={"test": entry}, models=models)), encoding="utf-8")
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1", "--out", str(out)])
    assert "| test | 12.50 | 3.25 |" in out.read_text(encoding="utf-8")

    torch.save({"w": torch.ones(2)}, exp / "teacher_oracle" / "valid.loss.ave.pth")  # retrained
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "3.25" not in text
    assert "stale" in text and "stage 6" in text


def test_extra_metric_columns_only_when_asked(tmp_path):
    exp = tmp_path / "exp"
    values = dict(wer=25.0, cer=10.0, word_accuracy=75.0, one_minus_ned=87.5)
    system(exp, "teacher_conventional", dict(model="espnet", seed=0, max_epoch=1),
           scores={"dev": values, "test": values})
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "dev test", "--seeds", "1", "--out", str(out)])
    assert "word acc" not in out.read_text(encoding="utf-8")
    make_results.main(["--exp", str(exp), "--sets", "dev test", "--seeds", "1", "--out", str(out),
                       "--extra_metrics", "word_accuracy one_minus_ned"])
    text = out.read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line.startswith("| system | params"))
    assert "| test WER | test CER | test word acc | test 1−NED |" in header
    row = row_of(text, "| conventional teacher", "## Systems")
    assert "| 25.00 | 10.00 | 75.00 | 87.50 |" in row


def spike(n, mean_abs, sd):
    return dict(wer=10.0, cer=5.0, spike=dict(n_onsets=n, mean_abs_onset_offset_ms=mean_abs,
                                              abs_onset_offset_sd_ms=sd))


def test_onset_error_column_pools_the_seeds_words(tmp_path):
    exp = tmp_path / "exp"
    config = dict(model="espnet", seed=1, max_epoch=3, model_conf=dict(ctc_weight=1.0))
    system(exp, "teacher_conventional", config, scores={"test": spike(100, 50.0, 10.0)})
    # two seeds of 100 words, sd 0, means 40 and 60: pooled mean 50, sd sqrt(100 * 200 / 199)
    system(exp, "student_nokd_seed1", config, scores={"test": spike(100, 40.0, 0.0)})
    system(exp, "student_nokd_seed2", config, scores={"test": spike(100, 60.0, 0.0)})
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1 2", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "| onset error (ms, 95 % CI, test) |" in text
    assert row_of(text, "| conventional teacher", "## Systems").endswith("| 50 [48, 52] |")  # 1.96 * 10 / 10
    assert row_of(text, "| student, no KD", "## Systems").endswith("| 50 [49, 51] |")


KD = dict(model="kd_student", seed=1, max_epoch=3,
          model_conf=dict(ctc_weight=1.0, kd_weight=0.5, kd_temperature=1.0, kd_frames="all"))
NOKD = dict(model="espnet", seed=1, max_epoch=3, model_conf=dict(ctc_weight=1.0))


def test_significance_section(tmp_path):
    """Seeds pooled per utterance, then a paired bootstrap: a student better on every utterance is
    significant (p < 0.001); identical students give Δ 0 and p 1; a missing set is named."""
    exp = tmp_path / "exp"
    utts = [f"u{i}" for i in range(20)]
    worse = {u: (2, 5) for u in utts}
    better = {u: (1, 5) for u in utts}
    for seed in (1, 2):
        system(exp, f"student_nokd_seed{seed}", NOKD, per_utt={"dev": worse, "test": worse})
        system(exp, f"student_convkd_a0.5_t1_all_seed{seed}", KD, per_utt={"dev": worse, "test": worse})
        system(exp, f"student_oraclekd_a0.5_t1_all_seed{seed}", KD, per_utt={"dev": better})  # no test scores
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "valid dev test", "--seeds", "1 2", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    title = "## Significance (paired bootstrap over utterances, seeds pooled)"
    assert title in text
    assert row_of(text, "| dev | Oracle KD vs conventional KD", title) == (
        "| dev | Oracle KD vs conventional KD | 20.00 | 40.00 | -20.00 | [-20.00, -20.00] | < 0.001 | Oracle KD |")
    same = row_of(text, "| dev | conventional KD vs no KD", title)
    assert same.endswith("| +0.00 | [+0.00, +0.00] | 1.000 | neither |")
    assert "- test: Oracle KD missing" in text
    assert "| test | conventional KD vs no KD |" in text and "| test | Oracle KD vs" not in text
    assert "| valid |" not in text  # the valid set is not a test set

    only = tmp_path / "only"
    system(only, "student_nokd_seed1", NOKD, per_utt={"test": worse})
    make_results.main(["--exp", str(only), "--sets", "dev test", "--seeds", "1", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "Not computed: it needs greedy scores of at least two of the student systems" in text
    assert "| set | A vs B |" not in text


def curve(d: Path, seconds: float):
    """cer_curve.tsv (training_curve.py) of a 1-epoch run that took ``seconds``."""
    (d / "cer_curve.tsv").write_text("epoch\tdev_cer\tdev_loss\ttrain_loss\twall_seconds\n"
                                     f"1\t10.0\t1.0\t1.0\t{seconds}\n", encoding="utf-8")


def test_kd_variants_table(tmp_path):
    """Students of the variant sweep (exp/variants/<variant>/) and of exp/ in one table: WER/CER over
    seeds, the paired bootstrap against conventional KD (seeds pooled), training and two-stage times."""
    exp = tmp_path / "exp"
    utts = [f"u{i}" for i in range(20)]
    worse, better = {u: (2, 5) for u in utts}, {u: (1, 5) for u in utts}
    for name, seconds in (("teacher_conventional", 100.0), ("teacher_oracle", 200.0)):
        d = system(exp, name, dict(model="espnet", seed=0, max_epoch=1))
        curve(d, seconds)
        for x in ("train_sp", "dev"):
            (d / "posteriors" / x).mkdir(parents=True)
            (d / "posteriors" / x / "stats.json").write_text(json.dumps(dict(seconds=5.0)), encoding="utf-8")
    for x in ("train_sp", "dev"):  # the Oracle Teacher's 1-best (stage 7, seq-KD)
        (exp / "teacher_oracle" / f"seqkd_nbest1_{x}_beam").mkdir()
        (exp / "teacher_oracle" / f"seqkd_nbest1_{x}_beam" / "seconds").write_text("7.5\n")
    scored = dict(wer=40.0, cer=20.0)
    for seed in (1, 2):
        for name, config, errors, wer in (
            (f"student_nokd_seed{seed}", NOKD, worse, 40.0),
            (f"student_convkd_a0.5_t1_nonblank_seed{seed}", KD, worse, 40.0),
        ):
            curve(system(exp, name, config, scores={"test": dict(scored, wer=wer)}, per_utt={"test": errors}), 50.0)
    variants = {
        "guided": "student_oracleguided_g1_seed{}",
        "seqkd": "student_oracleseqkd_s1_n1_seed{}",
        "selfdistill": "student_selfdistill_k1_t1_nonblank_seed{}",
    }
    for variant, pattern in variants.items():
        root = exp / "variants" / variant
        root.mkdir(parents=True)
        for t in ("teacher_conventional", "teacher_oracle"):
            (root / t).symlink_to(exp / t)
        for seed in (1, 2):
            config = dict(KD, model="oracle_self_distill") if variant == "selfdistill" else KD
            d = system(root, pattern.format(seed), config, scores={"test": dict(wer=20.0 + seed, cer=10.0)},
                       per_utt={"test": better})
            curve(d, 60.0 + 10 * seed)
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "dev test", "--train_set", "train_sp", "--seeds", "1 2",
                       "--out", str(out), "--kd_frames", "teacher_nonblank"])
    text = out.read_text(encoding="utf-8")
    title = "## KD variants (greedy CTC; mean ± std over seeds)"
    assert title in text
    table = text.split(title, 1)[1].split("\n## ", 1)[0]
    header = next(line for line in table.splitlines() if line.startswith("| system"))
    assert "| test WER | test CER | test ΔWER vs conv. KD |" in header and "| dev WER" not in header
    guided = row_of(text, "| student, Guided CTC from Oracle Teacher (Guided CTC weight 1)", title)
    cells = [c.strip() for c in guided.strip("|").split("|")]
    assert cells[1:6] == ["`student_oracleguided_g1_seed*`", "2", "21.50 ± 0.71", "10.00 ± 0.00",
                          "**-20.00** [-20.00, -20.00], p < 0.001"]
    # training: mean ± std of the seeds; total: the Oracle Teacher + its two dumps + the student
    assert cells[6] == "75 ± 7" and cells[7] == "200 + 10 + 75 = **285**", cells
    seqkd = row_of(text, "| student, sequence-level KD from Oracle Teacher (weight 1, 1-best)", title)
    assert seqkd.endswith("| 200 + 15 + 75 = **290** |"), seqkd  # hypothesis decoding: 2 x 7.5 s
    selfdistill = row_of(text, "| one-stage oracle self-distillation (source path)", title)
    assert selfdistill.endswith("| 75 (one stage) |"), selfdistill
    reference = row_of(text, "| student, KD from conventional teacher (α 0.5, τ 1, frames nonblank)", title)
    assert "(reference)" in reference and reference.endswith("| 100 + 10 + 50 = **160** |")
    nokd = row_of(text, "| student, no KD", title)
    assert "| +0.00 [+0.00, +0.00], p 1.000 |" in nokd and nokd.endswith("| 50 (one stage) |")
    # the reference students come first, the variants after them in the systems' order
    rows = [line for line in table.splitlines() if line.startswith("| student") or line.startswith("| one-stage")]
    assert [r.split("|")[2].strip() for r in rows] == [
        "`student_nokd_seed*`", "`student_convkd_a0.5_t1_nonblank_seed*`", "`student_oracleguided_g1_seed*`",
        "`student_oracleseqkd_s1_n1_seed*`", "`student_selfdistill_k1_t1_nonblank_seed*`"]
    # the sweep's students are in this table only, not in the main one (students of exp/)
    assert "student_selfdistill_k1_t1_nonblank" not in text.split("## Systems", 1)[1].split("## KD variants")[0]

    # without variants: no such table
    shutil.rmtree(exp / "variants")
    make_results.main(["--exp", str(exp), "--sets", "dev test", "--train_set", "train_sp", "--seeds", "1 2",
                       "--out", str(out), "--kd_frames", "teacher_nonblank"])
    assert "## KD variants" not in out.read_text(encoding="utf-8")


def test_wall_time_table_is_the_last_whole_run_not_later_partial_reruns(tmp_path):
    times = tmp_path / "stage_times.tsv"
    whole = ["0\tenvironment\t3", "1\tdata\t30", "4+5\tteachers_in_parallel\t1000", "10\tscore\t20"]
    times.write_text("\n".join(whole + ["8\tstudents\t5", "9\tdecode\t800", "2\tfeatures\t40"]) + "\n")
    out = "\n".join(make_results.wall_time_section(times))
    assert "last whole run, stages 0-10" in out and "**1053** (17.6 min)" in out
    assert "| 9 | decode |" not in out and "2 partial rerun(s) since" in out
    # no whole run (the recipe was run in parts): the last run of each stage, said so
    times.write_text("0\tenvironment\t3\n1\tdata\t30\n1\tdata\t31\n2\tfeatures\t4\n")
    out = "\n".join(make_results.wall_time_section(times))
    assert "last run of each stage" in out and "| 1 | data | 31 |" in out and "**38**" in out


def test_params_are_the_deployed_models(tmp_path):
    """Self-distillation trains a bigger model than it deploys: the params column counts the exported
    source path (inference.pth) where there is one, else the averaged checkpoint."""
    torch.save({"encoder.w": torch.zeros(10, 10), "normalize.mean": torch.zeros(40)}, tmp_path / "valid.loss.ave.pth")
    assert make_results.num_params(tmp_path) == 100
    torch.save({"encoder.w": torch.zeros(3, 10)}, tmp_path / "inference.pth")
    assert make_results.num_params(tmp_path) == 30


def test_kd_sweep_table_with_a_single_scored_set(tmp_path):
    """With one set (--sets test) the sweep table scores that set (it crashed on a KeyError)."""
    exp = tmp_path / "exp"
    config = dict(model="kd_student", seed=1, max_epoch=3,
                  model_conf=dict(ctc_weight=1.0, kd_weight=0.5, kd_temperature=1.0, kd_frames="all"))
    system(exp / "kd_sweep" / "a0.5_t1_all", "student_oraclekd_a0.5_t1_all_seed1", config,
           scores={"test": dict(wer=12.5, cer=4.25)})
    out = tmp_path / "RESULTS.md"
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert "| setting | student | seeds | test CER | test WER |" in text
    row = row_of(text, "| a0.5_t1_all |", "## KD hyper-parameter sweep (`local/kd_sweep.sh`; greedy CTC, "
                 "mean ± std over seeds)")
    assert "4.25" in row and "12.50" in row


def test_header_names_the_experiment_dir_it_read(tmp_path, monkeypatch):
    """A run with --exp exp_teacher_seed1 (stage 10 of a second teacher seed) says so, not exp/."""
    monkeypatch.chdir(tmp_path)
    exp = Path("exp_teacher_seed1")
    exp.mkdir()
    (exp / "commands.log").write_text("2026-12-07 02:41:24 cd /r && ./run.sh --exp exp_teacher_seed1\n")
    make_results.main(["--exp", str(exp), "--sets", "test", "--seeds", "1", "--out", "R.md"])
    text = Path("R.md").read_text(encoding="utf-8")
    assert "Generated from `exp_teacher_seed1/`" in text
    assert "Commands that produced `exp_teacher_seed1/` (from `exp_teacher_seed1/commands.log`)" in text
    assert "`exp/`" not in text
