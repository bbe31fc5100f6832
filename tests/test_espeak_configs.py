"""egs/espeak_sentences' configs: each YAML built through OracleASRTask at full size with its
300 BPE units (the parameter counts its README states) and stepped twice on a tiny batch of
40-bin features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CONF = Path(__file__).resolve().parents[1] / "egs" / "espeak_sentences" / "conf"
# millions of parameters with 300 units (README.md "Front-end, units, models")
EXPECTED_M = {
    "train_teacher_conventional.yaml": 1.100,
    "train_teacher_oracle.yaml": 1.353,
    "train_student.yaml": 0.297,
    "train_student_transformer_d48.yaml": 0.113,
}
TOKENS = ["<blank>", "<unk>"] + [f"t{i}" for i in range(297)] + ["<sos/eos>"]  # 300 units


@pytest.fixture(scope="module")
def files(token_file, write_mvn_stats, tmp_path_factory):
    d = tmp_path_factory.mktemp("espeak_conf")
    return token_file, write_mvn_stats(d / "feats_stats.npz", 40), d


@pytest.mark.parametrize("yaml_name", sorted(EXPECTED_M))
def test_config_builds_with_stated_size_and_steps(task, files, yaml_name, step_twice):
    tokens, stats, out = files
    args = task.get_parser().parse_args([
        "--config", str(CONF / yaml_name), "--token_list", str(tokens),
        "--normalize_conf", f"stats_file={stats}", "--output_dir", str(out),
    ])
    torch.manual_seed(0)
    model = task.build_model(args)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(EXPECTED_M[yaml_name], abs=0.0015), millions
    g = torch.Generator().manual_seed(0)
    batch = {"speech": torch.randn(2, 120, 40, generator=g), "speech_lengths": torch.tensor([120, 90]),
             "text": torch.tensor([[5, 9, 17], [3, 8, -1]]), "text_lengths": torch.tensor([3, 2])}
    step_twice(task, model, args, batch)
