"""A second corpus through egs/TEMPLATE: another layout, 8 kHz audio, BPE units, no optional files.

Builds a tiny corpus from a few FSDD recordings renamed into ``<corpus>/audio/<speaker>/<n>.wav`` plus
``<corpus>/index.tsv`` (file, speaker, word), copies egs/TEMPLATE, writes a short local/data.sh and tiny
configs into the copy, and runs stages 1-10 with ``--token_type bpe`` (fbank resampled 8 -> 16 kHz).
The data dirs have only wav.scp, text, utt2spk, spk2utt: no word_align, utt2snr or utt2noise.
The default smoke test (test_pipeline_smoke.py) covers the default recipe (word units, speed perturbation)
and the optional files.
"""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
FSDD = Path(os.environ.get("FSDD", ROOT.parent / "shared" / "data" / "fsdd")).resolve()
pytestmark = pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason=f"FSDD not found at {FSDD}")
WORDS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]
SETS = {"train": 20, "dev": 5, "eval": 5}

DATA_SH = r"""#!/usr/bin/env bash
# index.tsv (file speaker word) -> data/{train,dev,eval}: every 6th utterance to dev, the next to eval
set -euo pipefail
. ./db.sh
for s in train dev eval; do mkdir -p data/$s; done
awk -v c="${MYCORPUS}" 'NR > 1 {
    utt = $2 "-" sprintf("%03d", NR); set = (NR % 6 == 0) ? "dev" : (NR % 6 == 1 ? "eval" : "train")
    print utt, c "/" $1 > "data/" set "/wav.scp"; print utt, $3 > "data/" set "/text"
    print utt, $2 > "data/" set "/utt2spk" }' "${MYCORPUS}/index.tsv"
for s in train dev eval; do
    for f in wav.scp text utt2spk; do sort -o data/$s/$f data/$s/$f; done
    awk '{ u[$2] = u[$2] " " $1 } END { for (s in u) print s u[s] }' data/$s/utt2spk | sort > data/$s/spk2utt
done
"""


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.yaml"))}


def tiny(config: dict) -> dict:
    conf = config["encoder_conf"].get("source_encoder_conf", config["encoder_conf"])
    conf.update(output_size=32, linear_units=64, num_blocks=1)
    if "fusion_linear_units" in config["encoder_conf"]:
        config["encoder_conf"].update(num_fusion_blocks=1, fusion_linear_units=64)
    config.update(max_epoch=1, batch_size=8)
    return config


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("second")
    corpus = tmp / "corpus"
    lines = ["file\tspeaker\tword"]
    recordings = sorted((FSDD / "recordings").glob("*_[0-2].wav"))  # takes 0-2: 8 kHz FSDD
    for i, wav in enumerate(r for r in recordings if r.name.split("_")[1] in ("jackson", "nicolas")):
        if i >= sum(SETS.values()):
            break
        digit, speaker, _ = wav.stem.split("_")
        target = corpus / "audio" / f"spk{speaker[:3]}" / f"{i:04d}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, target)
        lines.append(f"audio/spk{speaker[:3]}/{i:04d}.wav\tspk{speaker[:3]}\t{WORDS[int(digit)]}")
    (corpus / "index.tsv").write_text("\n".join(lines) + "\n")

    before = {d: digests(d) for d in (ROOT / "conf", ROOT / "egs" / "TEMPLATE" / "conf")}
    r = tmp / "mycorpus"
    shutil.copytree(ROOT / "egs" / "TEMPLATE", r)
    (r / "local" / "data.sh").write_text(DATA_SH)
    (r / "db.sh").write_text(f"MYCORPUS={corpus}\n")
    for f in (r / "conf").glob("*.yaml"):
        f.write_text(yaml.safe_dump(tiny(yaml.safe_load(f.read_text()))))
    after = {d: digests(d) for d in before}
    env = dict(os.environ, ESPNET_ORACLE_ROOT=str(ROOT))
    # --nj 1: nj 2 doubles stage 7's dump processes, each importing ESPnet (the smoke run keeps nj 2)
    result = subprocess.run(
        [str(r / "run.sh"), "--stage", "1", "--test_sets", "eval", "--token_type", "bpe", "--nbpe", "20",
         "--seeds", "1", "--beam_size", "2", "--nj", "1"], cwd=tmp, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return r, result.stdout, before, after


def test_configs_of_the_copy_are_its_own(recipe):
    r, _, before, after = recipe
    assert before == after  # editing the copy's conf/ changed neither the default recipe nor TEMPLATE
    copied = [r / "run.sh", r / "db.sh", r / "README.md", *(r / "conf").iterdir(), *(r / "local").iterdir()]
    assert not any(p.is_symlink() for p in copied)


def test_data_and_bpe(recipe):
    r, stdout, _, _ = recipe
    for stage in range(1, 11):
        assert f"stage {stage}:" in stdout
    for name, n in SETS.items():
        assert sorted(p.name for p in (r / "data" / name).iterdir()) == ["spk2utt", "text", "utt2spk", "wav.scp"]
        feats = (r / "dump" / "fbank" / name / "feats.scp").read_text().splitlines()
        assert len(feats) == len((r / "data" / name / "text").read_text().splitlines())
    assert sum(len((r / "data" / s / "text").read_text().splitlines()) for s in SETS) == sum(SETS.values())
    tokens = (r / "data" / "token_list" / "bpe" / "tokens.txt").read_text().split()
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>" and 4 < len(tokens) <= 23
    assert (r / "data" / "token_list" / "bpe" / "bpe.model").is_file()
    # 8 kHz audio resampled to the copy's --fs: one feature vector of the configs' input_size per 10 ms
    dims = {f.name: yaml.safe_load(f.read_text())["input_size"] for f in (r / "conf").glob("*.yaml")}
    assert len(dims) == 4 and len(set(dims.values())) == 1, dims
    dim = next(iter(dims.values()))
    shapes = (r / "dump" / "fbank" / "train" / "feats_shape").read_text().splitlines()
    for utt, shape in (line.split() for line in shapes):
        frames, bins = map(int, shape.split(","))
        assert bins == dim, (utt, shape, dims)
        wav = next(line.split()[1] for line in (r / "data" / "train" / "wav.scp").read_text().splitlines()
                   if line.split()[0] == utt)
        seconds = sf.info(wav).duration
        assert abs(frames - (1000 * seconds - 25) / 10) <= 2, (utt, frames, seconds)  # 25 ms windows, 10 ms shift


def test_scores_and_results(recipe):
    r, _, _, _ = recipe
    exp = r / "exp"
    decodes = sorted(exp.glob("*/decode_eval_greedy"))
    assert len(decodes) == 5  # two teachers, three students
    for d in decodes:
        s = json.loads((d / "scores.json").read_text())
        refs = (r / "data" / "eval" / "text").read_text().splitlines()
        assert s["n_utts"] == len(refs) and s["n_words"] == len(refs)  # one word each
        assert 0 <= s["word_errors"] and s["wer"] == pytest.approx(100.0 * s["word_errors"] / s["n_words"])
        assert s["spike_hit_rate"] is None and s["wer_by_condition"] == {}
        assert len((d / "hyp.trn").read_text().splitlines()) == len(refs)
        assert not (d / "spike_timing.tsv").exists()
    assert list((exp / "plots").glob("posteriorgram_*.png"))  # no word_align: no crash
    results = (r / "RESULTS.md").read_text()
    assert "eval WER" in results and "Targets" not in results and "WER by" not in results
