#!/usr/bin/env python3
"""The sharded posterior dump (stage 7) on a GPU, with this recipe's conventional teacher.

Usage (on a machine with a GPU and the environment of local/gpu_check.sh)::

    python local/gpu_dump_check.py --out_dir exp/gpu_dump_check [--num_utts 256 --seconds 15]
    python local/gpu_dump_check.py --out_dir /tmp/gdc --dry_run     # CPU, tiny model: the logic only

Builds the 26 M E-Branchformer CTC teacher of ``conf/train_teacher_conventional.yaml`` (random
weights, a 5000-token list, utterance MVN) as a trained experiment dir, writes synthetic 16 kHz
utterances (``wav.scp`` + ``text``, as ``--feats_type raw``), and runs
``espnet_oracle.bin.dump_posteriors`` (top-8) as stage 7 does:

1. agreement, on a small set: one process on CPU, one process on the GPU, and ``--prepare`` +
   two GPU jobs in parallel through ``scripts/run_local.sh JOB=1:2`` + ``--merge``. The two GPU
   dumps must be byte-identical (ark files, post.scp, meta.json, utt2num_frames); GPU against
   CPU: share of frames with the same top-1 token and largest top-1 log-prob difference;
2. speed, on ``--num_utts`` x ``--seconds`` of audio: one GPU process, then ``--jobs`` GPU jobs
   sharing the one GPU (CPU-side work -- audio reading, top-k packing -- overlaps): wall time
   and audio seconds per second.

Writes ``<out_dir>/gpu_dump_check.json`` and prints it. ``--dry_run``: CPU only (the "GPU" runs
use the CPU too), d = 32 one-block model, a few 1-2 s utterances.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RECIPE = Path(__file__).resolve().parents[1]
ROOT = RECIPE.parents[1]
SAMPLE_RATE = 16000
TINY = ["output_size=32", "attention_heads=4", "linear_units=64", "cgmlp_linear_units=64", "num_blocks=1"]


def build_teacher(exp: Path, token_list: Path, dry_run: bool) -> None:
    import torch
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    extra = []
    for item in TINY if dry_run else []:
        extra += ["--encoder_conf", item]
    args = OracleASRTask.get_parser().parse_args(
        ["--config", str(RECIPE / "conf" / "train_teacher_conventional.yaml"), "--token_list", str(token_list),
         "--token_type", "char", "--normalize", "utterance_mvn", "--output_dir", str(exp), *extra])
    torch.manual_seed(0)
    model = OracleASRTask.build_model(args)
    exp.mkdir(parents=True, exist_ok=True)
    with open(exp / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), exp / "valid.loss.ave.pth")


def make_set(d: Path, num: int, seconds: float, letters: list, seed: int) -> float:
    """wav.scp (16-bit wav files), text and feats_shape (samples) of ``num`` utterances of 0.7-1.0 x
    ``seconds``; returns the audio's total seconds."""
    import soundfile

    rng = np.random.default_rng(seed)
    (d / "audio").mkdir(parents=True, exist_ok=True)
    scp, text, shape, total = [], [], [], 0
    for i in range(num):
        utt = f"spk{i % 7}-{i:05d}"
        n = int(SAMPLE_RATE * seconds * rng.uniform(0.7, 1.0))
        wav = d / "audio" / f"{utt}.wav"
        soundfile.write(wav, (0.1 * rng.standard_normal(n)).clip(-1, 1), SAMPLE_RATE, subtype="PCM_16")
        scp.append(f"{utt} {wav}\n")
        text.append(f"{utt} {''.join(rng.choice(letters, size=max(1, int(3.5 * n / SAMPLE_RATE))))}\n")
        shape.append(f"{utt} {n}\n")
        total += n
    for name, lines in (("wav.scp", scp), ("text", text), ("feats_shape", shape)):
        (d / name).write_text("".join(lines), encoding="utf-8")
    return total / SAMPLE_RATE


def dump_args(exp: Path, feats: Path, out: Path) -> list:
    return ["--exp_dir", str(exp), "--feats_dir", str(feats), "--out_dir", str(out), "--format", "topk",
            "--topk", "8", "--shard_size", "16"]


def one_process(exp, feats, out, ngpu, threads) -> float:
    from espnet_oracle.bin import dump_posteriors

    start = time.time()
    dump_posteriors.main(dump_args(exp, feats, out) + ["--ngpu", str(ngpu), "--nj", str(threads)])
    return time.time() - start


def sharded(exp, feats, out, ngpu, jobs) -> float:
    """What stage 7 runs: --prepare, JOB=1:N through run_local.sh, --merge (each a process)."""
    python = [sys.executable, "-m", "espnet_oracle.bin.dump_posteriors", *dump_args(exp, feats, out),
              "--num_jobs", str(jobs)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.time()
    subprocess.run([*python, "--prepare"], check=True, env=env, stdout=subprocess.DEVNULL)
    result = subprocess.run([str(ROOT / "scripts" / "run_local.sh"), "JOB=1:%d" % jobs,
                             str(out / "logs" / "dump.JOB.log"), *python, "--job", "JOB", "--ngpu", str(ngpu)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        logs = "".join(p.read_text() for p in sorted((out / "logs").glob("*.log")))
        sys.exit(f"jobs failed:\n{result.stderr}\n{logs[-4000:]}")
    subprocess.run([*python, "--merge"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.time() - start


def identical(a: Path, b: Path) -> bool:
    same = all((a / n).read_bytes() == (b / n).read_bytes() for n in ("meta.json", "utt2num_frames"))
    same &= (a / "post.scp").read_text().replace(str(a), "") == (b / "post.scp").read_text().replace(str(b), "")
    arks = sorted(p.name for p in (a / "data").glob("post.*.ark"))
    same &= arks == sorted(p.name for p in (b / "data").glob("post.*.ark"))
    return same and all((a / "data" / n).read_bytes() == (b / "data" / n).read_bytes() for n in arks)


def top1(out: Path) -> dict:
    """utt -> (top-1 ids, top-1 log-probs) of a top-k dump."""
    import kaldiio

    from espnet_oracle.utils.posteriors import topk_unpack

    result = {}
    for utt, packed in kaldiio.load_scp(str(out / "post.scp")).items():
        ids, values, _ = topk_unpack(np.array(packed))
        best = values.argmax(axis=1)
        rows = np.arange(len(best))
        result[utt] = (ids[rows, best], values[rows, best].astype(np.float64))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--num_utts", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=15.0, help="longest utterance (0.7-1.0 x this)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel GPU jobs of the speed run")
    parser.add_argument("--cpu_threads", type=int, default=8)
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args(argv)
    import torch

    out = Path(args.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ngpu = 0 if args.dry_run else 1
    if ngpu and not torch.cuda.is_available():
        sys.exit("gpu_dump_check: no CUDA device (use --dry_run for the CPU logic check)")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<blank>", "<unk>", *letters] + [f"piece{i}" for i in range(5000 - 3 - len(letters))] + ["<sos/eos>"]
    (out / "tokens.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    exp = out / "teacher"
    build_teacher(exp, out / "tokens.txt", args.dry_run)
    small_n, small_s = (4, 1.5) if args.dry_run else (24, 8.0)
    big_n, big_s = (6, 2.0) if args.dry_run else (args.num_utts, args.seconds)
    make_set(out / "small", small_n, small_s, letters, seed=1)
    audio = make_set(out / "big", big_n, big_s, letters, seed=2)

    report = dict(machine=platform.node(), python=platform.python_version(), torch=torch.__version__,
                  device=torch.cuda.get_device_name(0) if ngpu else "cpu (dry run)",
                  teacher_params_m=round(sum(p.numel() for p in torch.load(exp / "valid.loss.ave.pth").values()) / 1e6, 2),
                  vocab=len(tokens))
    # 1. agreement
    t_cpu = one_process(exp, out / "small", out / "small_cpu", 0, args.cpu_threads)
    t_gpu = one_process(exp, out / "small", out / "small_gpu", ngpu, 1)
    t_jobs = sharded(exp, out / "small", out / "small_gpu_2jobs", ngpu, 2)
    cpu, gpu = top1(out / "small_cpu"), top1(out / "small_gpu")
    same = sum(int((cpu[u][0] == gpu[u][0]).sum()) for u in cpu)
    frames = sum(len(cpu[u][0]) for u in cpu)
    report["agreement"] = dict(
        utterances=small_n, frames=frames,
        gpu_two_jobs_byte_identical_to_gpu_one_process=identical(out / "small_gpu", out / "small_gpu_2jobs"),
        gpu_vs_cpu_top1_same_share=round(same / frames, 5),
        gpu_vs_cpu_top1_logprob_max_abs_diff=float(max(np.abs(cpu[u][1] - gpu[u][1]).max() for u in cpu)),
        seconds=dict(cpu_one_process=round(t_cpu, 1), gpu_one_process=round(t_gpu, 1), gpu_two_jobs=round(t_jobs, 1)))
    # 2. speed
    t_one = one_process(exp, out / "big", out / "big_gpu", ngpu, 1)
    stats_one = json.loads((out / "big_gpu" / "stats.json").read_text())
    t_par = sharded(exp, out / "big", out / "big_gpu_jobs", ngpu, args.jobs)
    report["speed"] = dict(
        utterances=big_n, audio_seconds=round(audio, 1), frames=stats_one["frames"],
        one_process=dict(wall_seconds=round(t_one, 1), dump_seconds=round(stats_one["shard_seconds"], 1),
                         audio_seconds_per_second=round(audio / stats_one["shard_seconds"], 1)),
        jobs=dict(jobs=args.jobs, wall_seconds_with_startup=round(t_par, 1),
                  audio_seconds_per_second_with_startup=round(audio / t_par, 1)),
        same_as_one_process=identical(out / "big_gpu", out / "big_gpu_jobs"))
    text = json.dumps(report, indent=2)
    (out / "gpu_dump_check.json").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
