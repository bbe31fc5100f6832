#!/usr/bin/env python3
"""Training-step throughput of the LibriSpeech-100 configs on one GPU (or a CPU dry run).

Usage::

    python local/gpu_check.py --out_dir exp/gpu_check [--steps 200] [--max_seconds 60]
    python local/gpu_check.py --out_dir /tmp/gpu_check --dry_run     # CPU, tiny models, 2 steps

Builds, from ``conf/`` of this recipe, through ``espnet_oracle.tasks.oracle_asr.OracleASRTask``
(the project's training path):

* ``teacher``: the conventional teacher (26 M E-Branchformer CTC);
* ``oracle``: the Oracle Teacher (same source encoder + transcript fusion);
* ``student``: the student as a plain CTC model (``model: espnet``, the no-KD system);
* ``student_kd``: the same student weights as ``model: kd_student`` fed dense teacher
  posteriors (data type ``teacher_posterior``; what an online teacher hands it);
* ``student_kd_topk``: the same fed the stored top-8 form (data type
  ``teacher_topk_posterior``, the pipeline's default: no (B, T', V) teacher tensor);

and ``teacher_stock``: the conventional teacher's YAML built by stock
``espnet2.tasks.asr.ASRTask`` (what ``espnet2.bin.asr_train`` builds: no plugin, no
frame-count hook). Each is trained for ``--steps`` steps (after ``--warmup`` untimed ones)
on synthetic batches shaped like LibriSpeech's (raw 16 kHz audio, ``--batch_seconds`` of
audio per step in utterances of 10-16 s, ~3.5 BPE tokens a second) with the step ESPnet's
trainer takes: autocast float16 + GradScaler when ``use_amp`` (the configs set it), grad-norm
clipping at the config's ``grad_clip``, the config's optimizer. Reports per model: median step
time, utterances/s, audio seconds/s, input frames/s (10 ms) and encoder frames/s (40 ms), peak
GPU memory; and the ratios KD step / plain CTC step, dense and top-k (target <= 1.05), and project / stock
teacher step (target within 10 %). Writes ``<out_dir>/gpu_check.json`` and ``gpu_check.md``.

``--dry_run``: CPU, no AMP, d = 32 one-block models, 2 x 1 s utterances, 2 steps: checks the
logic (a test runs it), measures nothing meaningful.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

RECIPE = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
TOKENS_PER_SECOND = 3.5  # LibriSpeech train-clean-100 with 5000 BPE units: ~2.7 words/s, ~1.3 pieces/word

# d = 32, one block: the dry run's shrink of every config (same code path as full size)
TINY_EBF = ["output_size=32", "attention_heads=4", "linear_units=64", "cgmlp_linear_units=64",
            "num_blocks=1"]


def tiny_args(oracle: bool) -> list[str]:
    prefix = "source_encoder_conf." if oracle else ""
    args = []
    for item in TINY_EBF:
        args += ["--encoder_conf", prefix + item]
    if oracle:
        args += ["--encoder_conf", "fusion_linear_units=64", "--encoder_conf", "fusion_attention_heads=4"]
    return args


def write_token_list(path: Path, size: int) -> Path:
    tokens = ["<blank>", "<unk>"] + [f"tok{i}" for i in range(size - 3)] + ["<sos/eos>"]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def write_stats(path: Path, dim: int = 80) -> Path:
    """A global-MVN stats file (ESPnet's format) with log-mel-like mean/variance."""
    import numpy as np

    count = 1000
    mean, var = np.full(dim, -5.0), np.full(dim, 4.0)
    np.savez(path, count=count, sum=mean * count, sum_square=(var + mean**2) * count)
    return path


def build(task, conf: Path, token_list: Path, stats: Path, out: Path, extra: list[str]):
    parser = task.get_parser()
    args = parser.parse_args([
        "--config", str(conf), "--token_list", str(token_list),
        "--normalize_conf", f"stats_file={stats}", "--output_dir", str(out), *extra,
    ])
    return task.build_model(args), args


def make_batch(batch_seconds: float, vocab: int, seed: int, min_s: float, max_s: float):
    """Synthetic LibriSpeech-shaped batch: noisy harmonic 'speech', random token ids."""
    import torch

    g = torch.Generator().manual_seed(seed)
    durations = []
    while sum(durations) < batch_seconds:
        durations.append(min_s + (max_s - min_s) * float(torch.rand(1, generator=g)))
    lengths = torch.tensor([int(d * SAMPLE_RATE) for d in durations])
    speech = torch.zeros(len(durations), int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        t = torch.arange(n) / SAMPLE_RATE
        f0 = 100 + 100 * torch.rand(1, generator=g)
        speech[i, :n] = 0.1 * torch.sin(2 * torch.pi * f0 * t) + 0.02 * torch.randn(n, generator=g)
    text_lengths = torch.clamp((lengths / SAMPLE_RATE * TOKENS_PER_SECOND).long(), min=1)
    text = torch.full((len(durations), int(text_lengths.max())), -1, dtype=torch.long)
    for i, n in enumerate(text_lengths.tolist()):
        text[i, :n] = torch.randint(2, vocab - 1, (n,), generator=g)
    return {"speech": speech, "speech_lengths": lengths, "text": text, "text_lengths": text_lengths}


def to_device(batch: dict, device: str) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def encoder_frames(model, batch) -> "torch.Tensor":
    """Per-utterance encoder output frames (the student's = the teachers')."""
    import torch

    with torch.no_grad():
        model.eval()
        _, lens = model.encode(batch["speech"], batch["speech_lengths"])
        model.train()
    return lens


def train_steps(model, optimizer, batch, steps: int, warmup: int, use_amp: bool, grad_clip: float,
                device: str, max_seconds: float) -> dict:
    """ESPnet trainer's step: autocast(fp16) forward, scaled backward, unscale, clip, step."""
    import torch

    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    model.train()
    times = []
    start = time.perf_counter()
    for step in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        # SpecAug and global MVN modify their input in place: every step gets a fresh copy
        inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.autocast(device, dtype=torch.float16, enabled=use_amp):
            loss, _, _ = model(**inputs)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}")
        if step >= warmup and time.perf_counter() - start > max_seconds:
            break
    return {"steps": len(times), "median_step_s": statistics.median(times),
            "mean_step_s": statistics.fmean(times), "final_loss": float(loss.detach())}


def run(args) -> dict:
    import torch

    from espnet_oracle.tasks.oracle_asr import OracleASRTask
    from espnet_oracle.utils.quiet_import import import_espnet_asr_task

    stock_task = import_espnet_asr_task().ASRTask
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check.py: no CUDA device (use --dry_run for the CPU logic check)")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conf = Path(args.conf_dir)
    vocab = 30 if args.dry_run else args.vocab
    token_list = write_token_list(out / "tokens.txt", vocab)
    stats = write_stats(out / "feats_stats.npz")
    if args.dry_run:
        batch_seconds, min_s, max_s = 2.0, 1.0, 1.0
    else:
        batch_seconds, min_s, max_s = args.batch_seconds, 10.0, 16.0
    batch = to_device(make_batch(batch_seconds, vocab, args.seed, min_s, max_s), device)
    n_utts = int(batch["speech"].shape[0])
    audio_s = float(batch["speech_lengths"].sum()) / SAMPLE_RATE

    systems = [
        ("teacher", OracleASRTask, "train_teacher_conventional.yaml", False, []),
        ("oracle", OracleASRTask, "train_teacher_oracle.yaml", True, []),
        ("student", OracleASRTask, "train_student.yaml", False, []),
        ("student_kd", OracleASRTask, "train_student.yaml", False,
         ["--model", "kd_student", "--model_conf", "kd_weight=0.5"]),
        ("student_kd_topk", OracleASRTask, "train_student.yaml", False,
         ["--model", "kd_student", "--model_conf", "kd_weight=0.5"]),
        ("teacher_stock", stock_task, "train_teacher_conventional.yaml", False, []),
    ]
    results = {}
    student_state = None
    for name, task, yaml_name, oracle, extra in systems:
        torch.manual_seed(args.seed)
        extra = list(extra) + (tiny_args(oracle) if args.dry_run else [])
        model, margs = build(task, conf / yaml_name, token_list, stats, out / name, extra)
        model.to(device)
        if name == "student":
            student_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if name.startswith("student_kd"):
            model.load_state_dict(student_state)  # same weights as the plain CTC student
        optimizer = task.build_optimizers(margs, model)[0]
        use_amp = bool(getattr(margs, "use_amp", False)) and device == "cuda"
        step_batch = dict(batch)
        frames = encoder_frames(model, batch) if name != "oracle" else None
        if name.startswith("student_kd"):
            generator = torch.Generator(device=device).manual_seed(args.seed)
            logits = torch.randn(n_utts, int(frames.max()), vocab, device=device, generator=generator)
            teacher_post = torch.log_softmax(logits, dim=-1)
            if name == "student_kd":
                step_batch["teacher_post"], step_batch["teacher_post_lengths"] = teacher_post, frames
            else:
                step_batch["teacher_topk_post"] = topk_batch(teacher_post, k=8)
                step_batch["teacher_topk_post_lengths"] = frames
            del logits, teacher_post
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        r = train_steps(model, optimizer, step_batch, args.steps, args.warmup, use_amp,
                        float(margs.grad_clip), device, args.max_seconds)
        step = r["median_step_s"]
        enc_frames = int(frames.sum()) if frames is not None else None
        r.update(
            params_M=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            amp=use_amp,
            utts_per_s=n_utts / step,
            audio_s_per_s=audio_s / step,
            input_frames_per_s=audio_s * 100 / step,
            encoder_frames_per_s=(enc_frames / step) if enc_frames else None,
            peak_gpu_mem_GiB=(torch.cuda.max_memory_allocated() / 2**30) if device == "cuda" else None,
        )
        results[name] = r
        print(f"gpu_check.py: {name}: {r['median_step_s'] * 1000:.1f} ms/step, "
              f"{r['utts_per_s']:.1f} utt/s, {r['audio_s_per_s']:.0f} audio s/s", file=sys.stderr)
        del model, optimizer
    ratios = {
        "kd_step_over_ctc_step": results["student_kd"]["median_step_s"] / results["student"]["median_step_s"],
        "kd_topk_step_over_ctc_step":
            results["student_kd_topk"]["median_step_s"] / results["student"]["median_step_s"],
        "project_teacher_over_stock": results["teacher"]["median_step_s"] / results["teacher_stock"]["median_step_s"],
        "oracle_over_teacher": results["oracle"]["median_step_s"] / results["teacher"]["median_step_s"],
    }
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU dry run)"
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": gpu, "dry_run": args.dry_run, "torch": torch.__version__,
        "python": platform.python_version(), "batch_utterances": n_utts,
        "batch_audio_seconds": round(audio_s, 1), "vocab": vocab,
        "results": results, "ratios": ratios,
        "targets": {"kd_step_over_ctc_step": "<= 1.05", "kd_topk_step_over_ctc_step": "<= 1.05",
                    "project_teacher_over_stock": "0.90-1.10"},
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    return report


def topk_batch(log_probs: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T', V) log-probs -> the (B, T', 2k + 2) batch the ``teacher_topk_posterior`` loader gives."""
    import torch

    values, ids = log_probs.topk(k, dim=-1)
    leftover = torch.logsumexp(log_probs.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True)
    vocab = torch.full_like(leftover, log_probs.size(-1))
    return torch.cat([ids.float(), values, leftover, vocab], dim=-1)


def markdown(report: dict) -> str:
    lines = [
        f"GPU check {report['date']}, {report['device']}, torch {report['torch']}, "
        f"batch {report['batch_utterances']} utts / {report['batch_audio_seconds']} s audio, "
        f"vocab {report['vocab']}{' (DRY RUN: measures nothing)' if report['dry_run'] else ''}",
        "",
        "| model | params (M) | AMP | steps | ms/step | utt/s | audio s/s | enc. frames/s | peak GPU mem (GiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["results"].items():
        mem = f"{r['peak_gpu_mem_GiB']:.1f}" if r["peak_gpu_mem_GiB"] is not None else "-"
        enc = f"{r['encoder_frames_per_s']:.0f}" if r["encoder_frames_per_s"] else "-"
        lines.append(f"| {name} | {r['params_M']} | {r['amp']} | {r['steps']} | {r['median_step_s'] * 1000:.1f} "
                     f"| {r['utts_per_s']:.1f} | {r['audio_s_per_s']:.0f} | {enc} | {mem} |")
    ratios = report["ratios"]
    lines += ["", f"KD step / plain CTC step: dense {ratios['kd_step_over_ctc_step']:.3f}, top-8 "
              f"{ratios['kd_topk_step_over_ctc_step']:.3f} (target <= 1.05); "
              f"project teacher / stock ESPnet teacher: {ratios['project_teacher_over_stock']:.3f} "
              f"(target 0.90-1.10); Oracle / conventional teacher: {ratios['oracle_over_teacher']:.3f}", ""]
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--conf_dir", default=str(RECIPE / "conf"))
    parser.add_argument("--steps", type=int, default=200, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (cuDNN autotune, allocator)")
    parser.add_argument("--max_seconds", type=float, default=60.0, help="stop a model's timed steps after this")
    parser.add_argument("--batch_seconds", type=float, default=1000.0,
                        help="audio per step: batch_bins 16000000 raw samples = 1000 s (the 100 h configs)")
    parser.add_argument("--vocab", type=int, default=5000, help="token list size (ESPnet's nbpe 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry_run", action="store_true", help="CPU, tiny models, 2 steps: logic check only")
    return parser


def main(argv: Optional[list[str]] = None) -> dict:
    args = get_parser().parse_args(argv)
    if args.dry_run:
        args.steps, args.warmup = min(args.steps, 2), 0
    return run(args)


if __name__ == "__main__":
    main()
