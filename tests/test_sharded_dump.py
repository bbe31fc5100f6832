"""The posterior dump sharded over parallel jobs (issue 10): ``dump_posteriors --prepare``,
``--job J --num_jobs N`` and ``--merge`` give byte-identical results to the one-process dump,
a killed job's finished shards are reused, missing shards and shards of another stamp are
refused by the merge, and stage 7's runner pattern (``run_local.sh JOB=1:N``) works.

A tiny conventional CTC teacher (d = 16, one block) built through the task; seven short fake
utterances in shards of 2 (4 shards: job 1 of 2 makes shards 1 and 3, job 2 shards 2 and 4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "a", "b", "c", "d", "e", "f", "g", "h", "<sos/eos>"]
TEXTS = {f"utt{i}": text for i, text in enumerate(["abc", "bad", "hedge", "fig", "cab", "head", "ace"], 1)}


@pytest.fixture(scope="module")
def feats_dir(teacher_dir, tmp_path_factory):
    import yaml

    dim = int(yaml.safe_load((teacher_dir / "config.yaml").read_text())["input_size"])
    out = tmp_path_factory.mktemp("feats") / "train"
    out.mkdir()
    rng = np.random.default_rng(0)
    feats = {utt: rng.standard_normal((30 + 7 * i, dim)).astype(np.float32) for i, utt in enumerate(sorted(TEXTS))}
    kaldiio.save_ark(str(out / "feats.ark"), feats, scp=str(out / "feats.scp"))
    (out / "text").write_text("".join(f"{u} {t}\n" for u, t in TEXTS.items()), encoding="utf-8")
    return out


def _argv(teacher_dir, feats_dir, out_dir, *extra):
    return ["--exp_dir", str(teacher_dir), "--feats_dir", str(feats_dir), "--out_dir", str(out_dir),
            "--shard_size", "2", "--batch_size", "3", "--topk", "4", *extra]


def _dump(*argv):
    from espnet_oracle.bin import dump_posteriors

    dump_posteriors.main(list(argv))


def _prepare(teacher_dir, feats_dir, out, capsys) -> str:
    capsys.readouterr()
    _dump(*_argv(teacher_dir, feats_dir, out, "--num_jobs", "2", "--prepare"))
    return capsys.readouterr().out.strip().splitlines()[-1]


def _job(teacher_dir, feats_dir, out, job):
    _dump(*_argv(teacher_dir, feats_dir, out, "--num_jobs", "2", "--job", str(job)))


def _merge(teacher_dir, feats_dir, out):
    _dump(*_argv(teacher_dir, feats_dir, out, "--num_jobs", "2", "--merge"))


@pytest.fixture(scope="module")
def one_process(teacher_dir, feats_dir, tmp_path_factory):
    """The reference: the whole set dumped by one process."""
    out = tmp_path_factory.mktemp("one") / "post"
    _dump(*_argv(teacher_dir, feats_dir, out))
    return out


def _same_as(out: Path, ref: Path) -> None:
    """Byte-identical outputs (paths inside the scp files aside)."""
    def text(path, root):
        return path.read_text(encoding="utf-8").replace(str(root), "OUT")

    for name in ("meta.json", ".done", "utt2num_frames"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert text(out / "post.scp", out) == text(ref / "post.scp", ref)
    arks = sorted(p.name for p in (ref / "data").glob("post.*.ark"))
    assert arks == sorted(p.name for p in (out / "data").glob("post.*.ark")) and len(arks) == 4
    for name in arks:
        assert (out / "data" / name).read_bytes() == (ref / "data" / name).read_bytes(), name
    for p in (ref / "data").glob("post.*.scp"):
        assert text(out / "data" / p.name, out) == text(p, ref)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["bytes"] == json.loads((ref / "stats.json").read_text())["bytes"] and stats["shards"] == 4
    loaded = {u: np.array(a) for u, a in kaldiio.load_scp(str(out / "post.scp")).items()}
    assert sorted(loaded) == sorted(TEXTS)


def _mtimes(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("post.*.ark")}


def test_two_jobs_equal_one_process(teacher_dir, feats_dir, one_process, tmp_path, capsys):
    out = tmp_path / "post"
    assert _prepare(teacher_dir, feats_dir, out, capsys) == "dump"
    _job(teacher_dir, feats_dir, out, 2)  # any order
    assert sorted(_mtimes(out)) == ["post.2.ark", "post.4.ark"]
    _job(teacher_dir, feats_dir, out, 1)
    _merge(teacher_dir, feats_dir, out)
    _same_as(out, one_process)
    assert _prepare(teacher_dir, feats_dir, out, capsys) == "done"


def test_merge_names_missing_shards_and_a_killed_job_resumes(teacher_dir, feats_dir, one_process, tmp_path,
                                                            capsys):
    out = tmp_path / "post"
    assert _prepare(teacher_dir, feats_dir, out, capsys) == "dump"
    _job(teacher_dir, feats_dir, out, 1)
    _job(teacher_dir, feats_dir, out, 2)
    # job 2 "killed" while writing its second shard: that shard never became visible
    (out / "data" / "post.4.scp").unlink()
    before = _mtimes(out)
    with pytest.raises(SystemExit) as info:
        _merge(teacher_dir, feats_dir, out)
    message = str(info.value.code)
    assert "refusing to merge" in message and "shard(s) 4 (job 2 of 2) not finished" in message
    assert not (out / "post.scp").exists() and not (out / ".done").exists()
    # the re-run of job 2 keeps its finished shard 2 and makes shard 4 only
    capsys.readouterr()
    _job(teacher_dir, feats_dir, out, 2)
    assert "1 shard(s) dumped, 1 already done" in capsys.readouterr().out
    after = _mtimes(out)
    assert after["post.2.ark"] == before["post.2.ark"] and after["post.1.ark"] == before["post.1.ark"]
    assert after["post.4.ark"] != before["post.4.ark"]
    _merge(teacher_dir, feats_dir, out)
    _same_as(out, one_process)


def test_shards_of_another_stamp_are_never_mixed(teacher_dir, feats_dir, one_process, tmp_path, capsys):
    import torch

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    for name in ("config.yaml", "valid.loss.ave.pth"):
        (teacher / name).write_bytes((teacher_dir / name).read_bytes())
    out = tmp_path / "post"
    assert _prepare(teacher, feats_dir, out, capsys) == "dump"
    _job(teacher, feats_dir, out, 1)
    # the teacher is retrained while job 2 waits in the queue: job 2 sees the new model
    state = torch.load(teacher / "valid.loss.ave.pth")
    for value in state.values():
        if value.is_floating_point():
            value += 0.1
    torch.save(state, teacher / "valid.loss.ave.pth")
    _job(teacher, feats_dir, out, 2)
    with pytest.raises(SystemExit) as info:
        _merge(teacher, feats_dir, out)
    message = str(info.value.code)
    assert "shard(s) 1, 3 (job 1 of 2) made from other inputs (teacher model" in message
    assert not (out / "post.scp").exists()
    # the next stage-7 run: prepare says what changed and clears the stale shards; the jobs redo them
    capsys.readouterr()
    _dump(*_argv(teacher, feats_dir, out, "--num_jobs", "2", "--prepare"))
    said = capsys.readouterr()
    assert said.out.strip() == "dump" and "teacher model" in said.err
    _job(teacher, feats_dir, out, 1)
    _job(teacher, feats_dir, out, 2)
    _merge(teacher, feats_dir, out)
    stamp = json.loads((out / "meta.json").read_text())["stamp"]
    assert stamp != json.loads((one_process / "meta.json").read_text())["stamp"]
    for path in (out / "data").glob("post.*.json"):
        assert json.loads(path.read_text())["stamp"] == stamp
    new = {u: np.array(a) for u, a in kaldiio.load_scp(str(out / "post.scp")).items()}
    old = {u: np.array(a) for u, a in kaldiio.load_scp(str(one_process / "post.scp")).items()}
    assert all(not np.array_equal(new[u], old[u]) for u in TEXTS)


def _in_own_process(teacher_dir, feats_dir, out, mode: str) -> str:
    """``--prepare`` or ``--merge`` as stage 7 runs it, in a process of its own; asserts that it did
    not import torch or ESPnet (each costs seconds per call, 8 calls per recipe run); its stdout."""
    code = ("import sys; from espnet_oracle.bin import dump_posteriors; dump_posteriors.main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'espnet2', 'espnet') if m in sys.modules]; "
            "assert not heavy, f'imported {heavy}'")
    result = subprocess.run([sys.executable, "-c", code, *_argv(teacher_dir, feats_dir, out, "--num_jobs", "2", mode)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_stage7_runner_pattern(teacher_dir, feats_dir, one_process, tmp_path):
    """What stage 7 runs: prepare, then JOB=1:2 as two parallel processes through
    scripts/run_local.sh (the part that needs processes), then merge; prepare and merge are cheap
    processes (no torch or ESPnet import)."""
    out = tmp_path / "post"
    assert _in_own_process(teacher_dir, feats_dir, out, "--prepare").splitlines()[-1] == "dump"
    cmd = [sys.executable, "-m", "espnet_oracle.bin.dump_posteriors",
           *_argv(teacher_dir, feats_dir, out, "--num_jobs", "2", "--job", "JOB")]
    jobs = subprocess.run([str(REPO / "scripts" / "run_local.sh"), "JOB=1:2", str(out / "logs" / "dump.JOB.log"),
                           *cmd], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    logs = "".join(p.read_text() for p in sorted((out / "logs").glob("dump.*.log")))
    assert jobs.returncode == 0, jobs.stderr + logs
    assert "job 1/2" in logs and "job 2/2" in logs
    assert "7 utterances" in _in_own_process(teacher_dir, feats_dir, out, "--merge")
    _same_as(out, one_process)
    assert _in_own_process(teacher_dir, feats_dir, out, "--prepare").splitlines()[-1] == "done"


def test_one_job_covers_several_sets_and_loads_the_teacher_once(teacher_dir, feats_dir, one_process, tmp_path,
                                                               capsys, monkeypatch):
    """Stage 7 passes both sets to one set of jobs: ``--feats_dir A B --out_dir PA PB`` pairs them
    in order, prepare answers per set, and each job loads the teacher once for both."""
    from espnet_oracle.utils import inference

    valid = tmp_path / "valid"  # another set: three utterances of its own
    valid.mkdir()
    rng = np.random.default_rng(1)
    dim = next(iter(kaldiio.load_scp(str(feats_dir / "feats.scp")).values())).shape[1]
    valid_texts = {"v1": "dig", "v2": "bead", "v3": "cafe"}
    feats = {u: rng.standard_normal((25 + 4 * i, dim)).astype(np.float32) for i, u in enumerate(valid_texts)}
    kaldiio.save_ark(str(valid / "feats.ark"), feats, scp=str(valid / "feats.scp"))
    (valid / "text").write_text("".join(f"{u} {t}\n" for u, t in valid_texts.items()), encoding="utf-8")
    valid_ref = tmp_path / "valid_ref"
    _dump(*_argv(teacher_dir, valid, valid_ref))

    out_train, out_valid = tmp_path / "post_train", tmp_path / "post_valid"

    def argv(*extra):
        return ["--exp_dir", str(teacher_dir), "--feats_dir", str(feats_dir), str(valid),
                "--out_dir", str(out_train), str(out_valid), "--shard_size", "2", "--batch_size", "3",
                "--topk", "4", "--num_jobs", "2", *extra]

    capsys.readouterr()
    _dump(*argv("--prepare"))
    assert capsys.readouterr().out.strip().splitlines()[-2:] == ["dump", "dump"]
    loads = []
    real_load = inference.load_model
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    for job in (1, 2):
        _dump(*argv("--job", str(job)))
    assert len(loads) == 2  # one per job, not one per job and set
    _dump(*argv("--merge"))
    _same_as(out_train, one_process)
    got = {u: np.array(a) for u, a in kaldiio.load_scp(str(out_valid / "post.scp")).items()}
    want = {u: np.array(a) for u, a in kaldiio.load_scp(str(valid_ref / "post.scp")).items()}
    assert sorted(got) == sorted(valid_texts) and all(np.array_equal(got[u], want[u]) for u in want)
    assert (out_valid / "meta.json").read_bytes() == (valid_ref / "meta.json").read_bytes()
    capsys.readouterr()
    _dump(*argv("--prepare"))
    assert capsys.readouterr().out.strip().splitlines()[-2:] == ["done", "done"]
    with pytest.raises(SystemExit, match="2 --feats_dir but 1 --out_dir"):
        _dump("--exp_dir", str(teacher_dir), "--feats_dir", str(feats_dir), str(valid), "--out_dir", str(out_train))
