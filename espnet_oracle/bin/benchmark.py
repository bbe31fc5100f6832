"""Benchmark: KD training step vs plain CTC step of the same student, same batch.
Why it exists: the extra cost of KD per training step is a claim to measure.

Builds the student of --student_conf twice from the same weights, as
``model: espnet`` and as ``model: kd_student``, takes one real batch of the
training set with its stored teacher posteriors, and times forward + backward
+ optimizer step, interleaving the two so drifts in machine load hit both
equally. Reports medians, their ratio (target <= 1.10), the time to read and
expand the batch's stored posteriors (done by the data loader in training),
and the posterior storage size per frame. Results go to
``<exp>/benchmark/benchmark.json``; this is a measurement, not a test.

ESPnet's SpecAugment and global MVN work IN PLACE on the batch they are given
(when it does not require grad), so every step gets a fresh copy of the batch,
made outside the timed region: no step runs on input an earlier step already
masked and normalised.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from espnet_oracle.utils.datadir import atomic_write_text


def build(student_conf, token_list, stats_file, model, extra_args=()):
    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    parser = OracleASRTask.get_parser()
    argv = ["--config", student_conf, "--token_list", token_list, "--token_type", "char",
            "--normalize_conf", f"stats_file={stats_file}", "--output_dir", "/tmp/unused",
            "--train_data_path_and_name_and_type", "x,speech,kaldi_ark",
            "--valid_data_path_and_name_and_type", "x,speech,kaldi_ark",
            "--train_shape_file", "x", "--valid_shape_file", "x", "--model", model, *extra_args]
    args = parser.parse_args(argv)
    return OracleASRTask.build_model(args)


def fresh_copy(batch: dict) -> dict:
    """The batch with every tensor cloned: what one step may modify."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def timed_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    """One training step (forward, backward, optimizer step) on a fresh copy of ``batch``.

    Returns the seconds of the step; copying the batch is not timed. ``batch``
    itself is never handed to the model, so it stays as it was.
    """
    inputs = fresh_copy(batch)
    model.train()
    start = time.perf_counter()
    loss, _, _ = model(**inputs)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exp", default="exp")
    parser.add_argument("--student_conf", default="conf/train_student.yaml")
    parser.add_argument("--token_list", default="data/token_list/word/tokens.txt")
    parser.add_argument("--stats_file", default="dump/fbank/train_sp/feats_stats.npz")
    parser.add_argument("--feats_dir", default="dump/fbank/train_sp")
    parser.add_argument("--student_exp", default=None,
                        help="a trained student: its config.yaml gives the text preprocessing "
                             "(default: the no-KD student of seed 1 under --exp)")
    parser.add_argument("--post_scp", default="exp/teacher_oracle/posteriors/train_sp/post.scp")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.student_exp is None:
        found = sorted(Path(args.exp).glob("student_nokd_*seed1"))
        if not found:
            sys.exit(f"benchmark: no trained no-KD student under {args.exp}; pass --student_exp")
        args.student_exp = str(found[0])
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from espnet_oracle.utils.inference import FeatureSet, pad
    from espnet_oracle.utils.posteriors import TeacherPosteriorReader

    plain = build(args.student_conf, args.token_list, args.stats_file, "espnet")
    kd = build(args.student_conf, args.token_list, args.stats_file, "kd_student",
               ("--model_conf", "kd_weight=0.5", "--model_conf", "kd_temperature=1.0"))
    kd.load_state_dict(plain.state_dict())
    import yaml

    with open(Path(args.student_exp) / "config.yaml", encoding="utf-8") as f:
        train_args = argparse.Namespace(**yaml.safe_load(f))
    data = FeatureSet(Path(args.feats_dir), train_args)
    utt_ids = data.utt_ids[: args.batch_size]
    utterances = [data.get(u) for u in utt_ids]
    speech, speech_lengths = pad([u.feats.astype(np.float32) for u in utterances], 0.0)
    text, text_lengths = pad([np.asarray(u.token_ids, dtype=np.int64) for u in utterances], -1)

    reader = TeacherPosteriorReader(args.post_scp)
    load_times = []
    for _ in range(5):
        start = time.perf_counter()
        posts = [reader[u] for u in utt_ids]
        load_times.append(time.perf_counter() - start)
    teacher_post, teacher_post_lengths = pad(posts, 0.0)

    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in (("plain", plain), ("kd", kd))}
    timings = {"plain": [], "kd": []}

    batch = dict(speech=speech, speech_lengths=speech_lengths, text=text, text_lengths=text_lengths)
    batches = {"plain": batch,
               "kd": dict(batch, teacher_post=teacher_post, teacher_post_lengths=teacher_post_lengths,
                          utt_id=utt_ids)}
    models = {"plain": plain, "kd": kd}

    def step(name):
        timings[name].append(timed_step(models[name], optimizers[name], batches[name]))

    for _ in range(3):  # warm-up
        step("plain"), step("kd")
    timings = {"plain": [], "kd": []}
    for i in range(args.iterations):
        for name in (("plain", "kd") if i % 2 == 0 else ("kd", "plain")):
            step(name)
    plain_median = statistics.median(timings["plain"])
    kd_median = statistics.median(timings["kd"])
    result = {
        "batch": f"{len(utt_ids)} utterances, {int(speech_lengths.sum())} feature frames",
        "threads": args.threads,
        "plain_ctc_step_median_s": round(plain_median, 4),
        "kd_step_median_s": round(kd_median, 4),
        "kd_over_plain_step_ratio (target <= 1.10)": round(kd_median / plain_median, 3),
        "posterior_read_and_expand_per_batch_median_s": round(statistics.median(load_times), 4),
    }
    stats_path = Path(args.post_scp).parent / "stats.json"
    if stats_path.exists():
        stats = json.loads(stats_path.read_text())
        result["posterior_bytes_per_frame"] = round(stats["bytes_per_frame"], 1)
    out = Path(args.exp) / "benchmark" / "benchmark.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    with open(Path(args.exp) / "commands.log", "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} cd {Path.cwd()} && "
                  f"python -m espnet_oracle.bin.benchmark {' '.join(argv or [])}\n".replace("  ", " "))
    for key, value in result.items():
        print(f"benchmark: {key}: {value}")


if __name__ == "__main__":
    main()
