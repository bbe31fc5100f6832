"""LibriSpeech recipes' configs: every YAML built through OracleASRTask and stepped twice on the
CPU with tiny dimensions (the full-size code path: raw audio -> ESPnet default front-end ->
global MVN -> SpecAug -> E-Branchformer / Oracle Teacher -> CTC, the config's optimizer);
full-size parameter counts (build only); E-Branchformer and Conformer as Oracle source
encoders with per-utterance frame counts; the GPU check's CPU dry run."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"100h": REPO / "egs" / "librispeech_100" / "conf", "960h": REPO / "egs" / "librispeech" / "conf"}
CONFIGS = ("train_teacher_conventional.yaml", "train_teacher_oracle.yaml", "train_student.yaml")
TINY = ["output_size=32", "attention_heads=4", "linear_units=64", "cgmlp_linear_units=64", "num_blocks=1"]
# full-size parameter counts (millions, with 5000 BPE units): stated in the configs and READMEs
EXPECTED_M = {
    ("100h", "train_teacher_conventional.yaml"): (26.0, 27.0),   # ESPnet's published 26.43 M
    ("100h", "train_teacher_oracle.yaml"): (28.0, 31.0),
    ("100h", "train_student.yaml"): (4.0, 6.0),
    ("960h", "train_teacher_conventional.yaml"): (110.0, 125.0),
    ("960h", "train_teacher_oracle.yaml"): (118.0, 135.0),
    ("960h", "train_student.yaml"): (26.0, 27.0),
}


def tiny_args(yaml_name: str) -> list[str]:
    oracle = "oracle" in yaml_name
    prefix = "source_encoder_conf." if oracle else ""
    args = []
    for item in TINY:
        args += ["--encoder_conf", prefix + item]
    if oracle:
        args += ["--encoder_conf", "fusion_linear_units=64", "--encoder_conf", "fusion_attention_heads=4"]
    return args


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_mvn_stats):
    d = tmp_path_factory.mktemp("ls_conf")
    small = d / "tokens30.txt"
    small.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(27)] + ["<sos/eos>"]) + "\n")
    full = d / "tokens5000.txt"
    full.write_text("\n".join(["<blank>", "<unk>"] + [f"t{i}" for i in range(4997)] + ["<sos/eos>"]) + "\n")
    return {"small": small, "full": full, "stats": write_mvn_stats(d / "feats_stats.npz", 80), "out": d}


def build(task, files, conf: Path, tokens: Path, *extra):
    args = task.get_parser().parse_args([
        "--config", str(conf), "--token_list", str(tokens),
        "--normalize_conf", f"stats_file={files['stats']}", "--output_dir", str(files["out"]), *extra,
    ])
    return task.build_model(args), args


def batch(vocab: int, seconds=(1.6, 1.1, 1.3), seed=0):
    """Fixture-like batch: raw 16 kHz 'speech' of unequal lengths, BPE-like token ids."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(s * 16000) for s in seconds])
    speech = torch.zeros(len(seconds), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        speech[i, :n] = 0.1 * torch.sin(torch.arange(n) * 0.05 * (i + 1)) + 0.01 * torch.randn(n, generator=g)
    text_lengths = torch.tensor([5, 3, 4])
    text = torch.full((3, 5), -1, dtype=torch.long)
    for i, n in enumerate(text_lengths.tolist()):
        text[i, :n] = torch.randint(2, vocab - 1, (n,), generator=g)
    return {"speech": speech, "speech_lengths": lengths, "text": text, "text_lengths": text_lengths}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("yaml_name", CONFIGS)
def test_config_builds_and_steps_tiny(task, files, recipe, yaml_name, step_twice):
    conf = RECIPES[recipe] / yaml_name
    torch.manual_seed(0)
    model, args = build(task, files, conf, files["small"], *tiny_args(yaml_name))
    # the configs' full-size choices are kept: raw audio front-end, SpecAug, E-Branchformer
    assert args.frontend == "default" and args.frontend_conf["n_fft"] == 512 and args.frontend_conf["hop_length"] == 160
    assert args.specaug == "specaug" and args.use_amp is True and args.batch_type == "numel"
    assert args.specaug_conf["apply_time_warp"] is ("student" not in yaml_name)
    encoder = model.encoder.source_encoder if "oracle" in yaml_name else model.encoder
    assert type(encoder).__name__ == "EBranchformerEncoder"
    assert getattr(encoder.embed, "_exact_subsampling_lengths", False)
    step_twice(task, model, args, batch(30))
    if "student" in yaml_name:
        # the same student as a KD student: teacher posteriors with one frame per student frame
        torch.manual_seed(0)
        kd, kd_args = build(task, files, conf, files["small"], *tiny_args(yaml_name),
                            "--model", "kd_student", "--model_conf", "kd_weight=0.5")
        inputs = batch(30)
        with torch.no_grad():
            kd.eval()
            _, frames = kd.encode(inputs["speech"].clone(), inputs["speech_lengths"])
        inputs["teacher_post"] = torch.log_softmax(torch.randn(3, int(frames.max()), 30), dim=-1)
        inputs["teacher_post_lengths"] = frames
        step_twice(task, kd, kd_args, inputs)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_full_size_parameter_counts(task, files, recipe):
    counts = {}
    for yaml_name in CONFIGS:
        model, _ = build(task, files, RECIPES[recipe] / yaml_name, files["full"])
        counts[yaml_name] = sum(p.numel() for p in model.parameters()) / 1e6
        low, high = EXPECTED_M[(recipe, yaml_name)]
        assert low <= counts[yaml_name] <= high, (recipe, yaml_name, counts[yaml_name])
        del model
    ratio = counts["train_teacher_conventional.yaml"] / counts["train_student.yaml"]
    assert 4.0 <= ratio <= 8.0, ratio     # students 4-8x smaller than the conventional teacher
    if recipe == "100h":
        assert abs(counts["train_teacher_conventional.yaml"] - 26.43) < 0.01   # ESPnet's 26.43 M


@pytest.mark.parametrize("source", ["e_branchformer", "conformer"])
def test_source_encoders_give_per_utterance_frame_counts(task, source):
    from espnet_oracle.asr.encoder.oracle_teacher_encoder import OracleTeacherEncoder

    confs = {
        "e_branchformer": dict(output_size=32, attention_heads=4, linear_units=64, cgmlp_linear_units=64,
                               num_blocks=1, input_layer="conv2d", rel_pos_type="latest",
                               pos_enc_layer_type="rel_pos", attention_layer_type="rel_selfattn"),
        "conformer": dict(output_size=32, attention_heads=4, linear_units=64, num_blocks=1,
                          input_layer="conv2d", rel_pos_type="latest", pos_enc_layer_type="rel_pos",
                          selfattention_layer_type="rel_selfattn", macaron_style=True,
                          use_cnn_module=True, cnn_module_kernel=15),
    }
    torch.manual_seed(0)
    enc = OracleTeacherEncoder(input_size=80, vocab_size=30, source_encoder=source,
                               source_encoder_conf=confs[source], fusion_linear_units=64).eval()
    assert getattr(enc.source_encoder.embed, "_exact_subsampling_lengths", False)
    lengths = torch.tensor([161, 97, 130])
    xs = torch.randn(3, 161, 80)
    text = torch.randint(2, 29, (3, 4))
    text_lengths = torch.tensor([4, 2, 3])
    with torch.no_grad():
        out, olens, _ = enc(xs, lengths, text=text, text_lengths=text_lengths)
        for i in range(3):
            _, alone, _ = enc(xs[i:i + 1, : lengths[i]], lengths[i:i + 1], text=text[i:i + 1, : text_lengths[i]],
                              text_lengths=text_lengths[i:i + 1])
            assert int(alone) == int(olens[i])          # same frame count alone as in a batch
    assert out.shape == (3, int(olens.max()), 32)
    assert olens.tolist() == [((int(n) - 1) // 2 - 1) // 2 for n in lengths]
    enc.train()
    out, _, _ = enc(xs, lengths, text=text, text_lengths=text_lengths)
    out.sum().backward()


def test_gpu_check_dry_run(tmp_path):
    sys.path.insert(0, str(REPO / "egs" / "librispeech_100" / "local"))
    import gpu_check

    report = gpu_check.main(["--out_dir", str(tmp_path), "--dry_run"])
    assert report["dry_run"] and set(report["results"]) == {"teacher", "oracle", "student", "student_kd",
                                                            "student_kd_topk", "teacher_stock"}
    for name, r in report["results"].items():
        assert r["steps"] == 2 and r["median_step_s"] > 0 and np.isfinite(r["final_loss"]), name
        assert r["amp"] is False and r["peak_gpu_mem_GiB"] is None
    assert report["results"]["student"]["params_M"] == report["results"]["student_kd"]["params_M"]
    assert set(report["ratios"]) == {"kd_step_over_ctc_step", "kd_topk_step_over_ctc_step",
                                     "project_teacher_over_stock", "oracle_over_teacher"}
    md = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in md and "| student_kd |" in md and "| student_kd_topk |" in md
    assert (tmp_path / "gpu_check.json").exists()


def test_gpu_check_sh_dry_run_and_cuda_refusal(tmp_path):
    """The shell entry point: --dry_run runs the CPU logic check; without CUDA, a clear refusal."""
    import os
    import subprocess

    script = REPO / "egs" / "librispeech_100" / "local" / "gpu_check.sh"
    done = subprocess.run([str(script), "--dry_run", "--out_dir", str(tmp_path / "dry")],
                          capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DRY RUN" in (tmp_path / "dry" / "gpu_check.md").read_text()
    if not torch.cuda.is_available():
        done = subprocess.run([str(script), "--out_dir", str(tmp_path / "real"), "--wheelhouse", str(tmp_path)],
                              capture_output=True, text=True, env=dict(os.environ))
        assert done.returncode != 0 and "need torch/torchaudio with a CUDA device" in done.stderr
