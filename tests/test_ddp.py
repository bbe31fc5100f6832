"""Multi-process (DDP) training on CPU (issue 10): the frame-count hook and the utterance-id context
reach the model inside torch's DistributedDataParallel, and ESPnet's own trainer runs the
project's models under DDP with gloo.

- torch level: two processes (gloo, ``torch.multiprocessing`` spawn) wrap task-built models in
  ``DistributedDataParallel`` as ESPnet's trainer does and run forward + backward on batches of
  different-length utterances (each rank its own): the conformer teacher, the Oracle Teacher
  (conformer source encoder) and the transformer student as ``kd_student`` with teacher
  posteriors. Per-utterance encoder frame counts equal the
  single-process ones, the utterance ids reach the inner model's hooks, and the gradients are the
  same on both ranks and equal the mean of the single-process gradients of the two batches.
- ESPnet level: ``espnet_oracle.bin.asr_train`` trains ``kd_student`` (top-k teacher posteriors)
  for one tiny epoch in two processes started by ``torchrun`` with ``--ngpu 0
  --multiprocessing_distributed false --dist_backend gloo``: ESPnet's own launcher
  (``--multiprocessing_distributed true``) spawns one process per GPU and, with ``--ngpu 0``,
  runs a single non-distributed process, so a CPU run needs an external launcher (torchrun, or
  srun with ``--dist_launcher slurm``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
V = len(TOKENS)
TINY = ["output_size=16", "attention_heads=2", "linear_units=32", "num_blocks=1"]
NO_DROPOUT = ["dropout_rate=0.0", "positional_dropout_rate=0.0"]


def _conf(items, prefix=""):
    return [arg for item in items for arg in ("--encoder_conf", prefix + item)]


MODELS = {
    # the conventional teacher (conformer, conv2d x4, padding-masked convolution module), shrunk
    "conformer": ("train_teacher_conventional.yaml", _conf(TINY + NO_DROPOUT + ["cnn_module_kernel=5"])),
    # the Oracle Teacher (the same conformer as its source encoder + transcript fusion)
    "oracle_teacher": ("train_teacher_oracle.yaml",
                       _conf(TINY + NO_DROPOUT + ["cnn_module_kernel=5"], "source_encoder_conf.")
                       + _conf(["fusion_attention_heads=2", "fusion_linear_units=32", "num_fusion_blocks=1",
                                "dropout_rate=0.0",
                                # the recipe's token dropout masks other tokens on each rank
                                "target_token_dropout=0.0"])),
    # the student (transformer, conv2d x4) with frame-level KD from stored teacher posteriors
    "kd_student": ("train_student.yaml", _conf(TINY + NO_DROPOUT)
                   + ["--model", "kd_student", "--model_conf", "kd_weight=0.5"]),
}
# each rank's batch: different lengths, and each rank's longest differs (other padding per rank)
RANK_LENGTHS = ([96, 70, 81], [61, 88])
WORLD = len(RANK_LENGTHS)


def conv2d_frames(t: int) -> int:
    return ((t - 1) // 2 - 1) // 2


def _build(name: str, token_file: Path, out: Path):
    from espnet_oracle.tasks.oracle_asr import OracleASRTask

    config, extra = MODELS[name]
    args = OracleASRTask.get_parser().parse_args(
        ["--config", str(REPO / "conf" / config), "--token_list", str(token_file),
         "--normalize", "utterance_mvn", "--output_dir", str(out), "--specaug", "none", *extra])
    torch.manual_seed(0)
    return OracleASRTask.build_model(args).train(), args.input_size


def _batches(name: str, feat_dim: int):
    """One ESPnet-style batch (the keyword arguments the trainer passes) per rank."""
    g = torch.Generator().manual_seed(5)
    batches = []
    for rank, lengths in enumerate(RANK_LENGTHS):
        n = len(lengths)
        speech = torch.zeros(n, max(lengths), feat_dim)
        for i, t in enumerate(lengths):
            speech[i, :t] = torch.randn(t, feat_dim, generator=g)
        text_lengths = torch.tensor([4, 2, 3][:n])
        text = torch.full((n, int(text_lengths.max())), -1)
        for i, m in enumerate(text_lengths.tolist()):
            text[i, :m] = torch.randint(2, V - 1, (m,), generator=g)
        batch = dict(speech=speech, speech_lengths=torch.tensor(lengths), text=text, text_lengths=text_lengths,
                     utt_id=[f"rank{rank}-utt{i}" for i in range(n)])
        if name == "kd_student":
            # the teacher's posteriors of each utterance: its lone-utterance frame count, padded
            frames = [conv2d_frames(t) for t in lengths]
            post = torch.log_softmax(3 * torch.randn(n, max(frames), V, generator=g), dim=-1)
            batch.update(teacher_post=post, teacher_post_lengths=torch.tensor(frames))
        batches.append(batch)
    return batches


def _step(model, batch):
    """Forward + backward as ESPnet's trainer; returns (encoder frame counts, utterance ids seen by
    the inner model's hooks, loss, {name: grad})."""
    from espnet_oracle.asr.encoder.exact_subsampling_lengths import current_utt_ids

    seen = {}

    def record(module, inputs, output):
        seen["frames"] = output[1].tolist()
        seen["utt_ids"] = current_utt_ids()

    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    # the Oracle Teacher's frames are its source encoder's (the fusion keeps their count)
    handle = getattr(inner.encoder, "source_encoder", inner.encoder).register_forward_hook(record)
    try:
        inner.zero_grad()
        loss, stats, weight = model(**{k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()})
        loss.backward()
    finally:
        handle.remove()
    grads = {n: p.grad.detach().clone() for n, p in inner.named_parameters() if p.grad is not None}
    return seen["frames"], seen["utt_ids"], loss.item(), grads


def _worker(rank: int, port: int, token_file: str, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for name in MODELS:
            model, feat_dim = _build(name, Path(token_file), Path(out))
            # as ESPnet's trainer wraps it on CPU (--ngpu 0): no device ids
            ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=None, output_device=None)
            frames, utt_ids, loss, grads = _step(ddp, _batches(name, feat_dim)[rank])
            torch.save(dict(frames=frames, utt_ids=utt_ids, loss=loss, grads=grads),
                       Path(out) / f"{name}.rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(token_file, tmp_path_factory):
    """Both models' DDP steps, from one spawn of two processes (start-up is most of the time)."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ddp")
    context = mp.spawn(_worker, args=(_free_port(), str(token_file), str(out)), nprocs=WORLD, join=False)
    deadline = time.time() + 600
    while not context.join(timeout=5):  # raises if a worker failed
        if time.time() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two DDP processes did not finish in 600 s")
    return {name: [torch.load(out / f"{name}.rank{r}.pt") for r in range(WORLD)] for name in MODELS}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ddp_keeps_frame_counts_and_syncs_gradients(name, ddp_results, token_file, tmp_path):
    results = ddp_results[name]
    model, feat_dim = _build(name, token_file, tmp_path)
    batches = _batches(name, feat_dim)
    local = [_step(model, batch) for batch in batches]
    for rank, (result, (frames, _, loss, _), lengths) in enumerate(zip(results, local, RANK_LENGTHS)):
        # every utterance's frame count is its lone-utterance count, whatever its batch/rank
        assert result["frames"] == frames == [conv2d_frames(t) for t in lengths], (name, rank)
        assert result["utt_ids"] == batches[rank]["utt_id"], "utt_id did not reach the inner model"
        assert result["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    # gradients: synchronised (equal on both ranks) and the mean of the two ranks' own gradients
    g0, g1 = results[0]["grads"], results[1]["grads"]
    assert g0.keys() == g1.keys() == local[0][3].keys() and len(g0) > 0
    # every parameter takes part (ESPnet's default --unused_parameters false needs that)
    assert set(g0) == {n for n, p in model.named_parameters() if p.requires_grad}
    for key in g0:
        torch.testing.assert_close(g0[key], g1[key], rtol=0, atol=0)
        expected = (local[0][3][key] + local[1][3][key]) / 2
        torch.testing.assert_close(g0[key], expected, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(local[0][3][k], local[1][3][k]) for k in g0)  # the batches differ


# ---------------------------------------------------------------------------
# ESPnet's trainer under DDP: torchrun, two CPU processes, gloo

def _write_training_data(root: Path, feat_dim: int):
    """Features, text and shapes of 8 training / 4 validation utterances; top-k teacher posteriors."""
    from espnet_oracle.utils.posteriors import PosteriorWriter, token_list_sha, write_meta

    rng = np.random.default_rng(0)
    letters = TOKENS[2:-1]
    for name, count in (("train", 8), ("valid", 4)):
        d = root / name
        d.mkdir(parents=True)
        feats = {f"{name}{i:02d}": rng.standard_normal((40 + 9 * i, feat_dim)).astype(np.float32)
                 for i in range(count)}
        kaldiio.save_ark(str(d / "feats.ark"), feats, scp=str(d / "feats.scp"))
        texts = {u: "".join(rng.choice(letters, size=3 + i % 3)) for i, u in enumerate(feats)}
        (d / "text").write_text("".join(f"{u} {t}\n" for u, t in texts.items()))
        (d / "feats_shape").write_text("".join(f"{u} {x.shape[0]},{feat_dim}\n" for u, x in feats.items()))
        post = d / "post"
        writer = PosteriorWriter(str(post), "1", fmt="topk", k=4)
        for u, x in feats.items():
            t = conv2d_frames(x.shape[0])
            writer.write(u, np.log(rng.dirichlet(np.ones(V) * 0.3, size=t) + 1e-12).astype(np.float32))
        writer.close()
        (post / "post.scp").write_text(writer.scp.read_text())
        write_meta(str(post), format="topk", k=4, vocab_size=V, token_list_sha=token_list_sha(TOKENS))


def test_espnet_trainer_runs_ddp_on_cpu_with_torchrun(token_file, tmp_path):
    config, extra = MODELS["kd_student"]
    feat_dim = 40  # the configs' input_size
    _write_training_data(tmp_path, feat_dim)
    exp = tmp_path / "exp"
    data = []
    for mode, name in (("train", "train"), ("valid", "valid")):
        d = tmp_path / name
        data += [f"--{mode}_data_path_and_name_and_type", f"{d}/feats.scp,speech,kaldi_ark",
                 f"--{mode}_data_path_and_name_and_type", f"{d}/text,text,text",
                 f"--{mode}_data_path_and_name_and_type", f"{d}/post/post.scp,teacher_post,teacher_posterior",
                 f"--{mode}_shape_file", f"{d}/feats_shape"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "espnet_oracle.bin.asr_train",
               "--config", str(REPO / "conf" / config), *extra, "--input_size", str(feat_dim),
               "--token_list", str(token_file), "--token_type", "char", "--normalize", "utterance_mvn",
               "--ngpu", "0", "--multiprocessing_distributed", "false", "--dist_backend", "gloo",
               "--max_epoch", "1", "--batch_size", "4", "--batch_type", "sorted", "--num_workers", "0",
               "--output_dir", str(exp), *data]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # its own process group: on a timeout the workers torchrun started are ended with it
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in 600 s:\n{log[-4000:]}")
    assert proc.returncode == 0, log[-6000:]
    # both ranks of one job of world size 2 ran, and rank 0 wrote the epoch's model and stats
    assert ":0/2]" in log, log[-3000:]  # rank 0 logs as rank 0 of world size 2 (rank 1 logs errors only)
    assert (exp / "1epoch.pth").exists() and (exp / "checkpoint.pth").exists()
    state = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)
    train_stats = state["reporter"]["stats"][1]["train"]
    assert np.isfinite(train_stats["loss_kd"]) and np.isfinite(train_stats["loss_ctc"])


def test_espnet_own_launcher_needs_gpus():
    """Why the CPU run above uses torchrun: ESPnet's own launcher (``--multiprocessing_distributed
    true``) spawns one process per GPU; with ``--ngpu 0`` (or 1) it quietly trains in one
    ordinary process, and under an external launcher (WORLD_SIZE, RANK set) with
    ``--multiprocessing_distributed false`` the run is distributed whatever ``--ngpu`` is."""
    import argparse

    from espnet2.train.distributed_utils import resolve_distributed_mode

    def mode(ngpu, mp, env):
        args = argparse.Namespace(ngpu=ngpu, multiprocessing_distributed=mp, dist_world_size=None,
                                  dist_rank=None, local_rank=None, dist_launcher=None)
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            resolve_distributed_mode(args)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return args.distributed, args.multiprocessing_distributed

    assert mode(0, True, {}) == (False, False)  # one process, not an error
    assert mode(2, True, {}) == (True, True)  # spawns 2 processes, one GPU each
    assert mode(0, False, {"WORLD_SIZE": "2", "RANK": "1"}) == (True, False)  # torchrun / srun on CPU
