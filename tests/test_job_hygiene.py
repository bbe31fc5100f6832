"""Failure hygiene of the job runners, run.sh's background jobs and the sweep scripts (issue 7, item 8).

Everything here runs fake jobs (sleep / exit), no training: a job that fails
must end its still-running siblings (with all they started), logs are
appended to, and sweeps go on past a failed setting and name it at the end.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RUN_LOCAL = ROOT / "scripts" / "run_local.sh"
RUN_SLURM = ROOT / "scripts" / "run_slurm.sh"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for_file(path: Path, timeout: float = 20.0) -> str:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_run_local_failing_job_ends_its_sibling(tmp_path):
    job = write_exe(tmp_path / "job.sh", (
        "#!/usr/bin/env bash\n"
        'if [ "$1" = 1 ]; then sleep 0.5; echo failing; exit 3; fi\n'
        'echo $$ > "$2"; sleep 60\n'
    ))
    started = time.time()
    result = subprocess.run(
        [str(RUN_LOCAL), "JOB=1:2", str(tmp_path / "log.JOB"), str(job), "JOB", str(tmp_path / "sleeper.pid")],
        capture_output=True, text=True, timeout=40,
    )
    elapsed = time.time() - started
    sleeper = int(wait_for_file(tmp_path / "sleeper.pid"))
    assert result.returncode != 0
    assert elapsed < 30, f"run_local.sh waited {elapsed:.0f} s for the sleeping sibling"
    assert not alive(sleeper), "the sibling of the failed job is still running"
    assert "log.1" in result.stderr  # names the failed job's log
    assert "status 3" in (tmp_path / "log.1").read_text()


def test_run_local_term_ends_its_jobs(tmp_path):
    job = write_exe(tmp_path / "job.sh", '#!/usr/bin/env bash\necho $$ > "$1"; sleep 60\n')
    proc = subprocess.Popen(
        [str(RUN_LOCAL), "JOB=1:2", str(tmp_path / "log.JOB"), str(job), str(tmp_path / "pid.JOB")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pids = [int(wait_for_file(tmp_path / f"pid.{i}")) for i in (1, 2)]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert proc.returncode != 0
    time.sleep(0.2)
    assert not any(alive(p) for p in pids)


def test_run_local_appends_logs_with_a_header_per_attempt(tmp_path):
    log = tmp_path / "train.log"
    for word in ("first", "second"):
        subprocess.run([str(RUN_LOCAL), str(log), "echo", word], check=True, timeout=20)
    text = log.read_text()
    assert "first" in text and "second" in text
    assert text.count("# ==== attempt started") == 2


def fake_slurm(tmp_path: Path) -> dict:
    """sbatch / scancel stand-ins: sbatch records its arguments, prints a job id (1000 + job index)
    and "runs" the job: one whose --wrap mentions mode_1 fails after 1 s, mode_2 waits until killed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_exe(bin_dir / "sbatch", (
        "#!/usr/bin/env bash\n"
        f"calls={tmp_path}/sbatch_calls\n"
        'for a in "$@"; do case "$a" in --output=*) n=${a##*.} ;; esac; done  # job index: log.<n>\n'
        'printf "%s\\n" "$@" > "$calls.$n"\n'
        'echo $((1000 + n))\n'
        'case "$*" in\n'
        "  *mode_1*) sleep 1; exit 1 ;;\n"
        f"  *mode_2*) echo $$ > {tmp_path}/sleeping_sbatch; exec sleep 60 ;;\n"
        "esac\n"
    ))
    write_exe(bin_dir / "scancel", f'#!/usr/bin/env bash\necho "$@" >> {tmp_path}/scancel_calls\n')
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_run_slurm_command_line(tmp_path):
    env = fake_slurm(tmp_path)
    result = subprocess.run(
        [str(RUN_SLURM), "--gpu", "1", "--mem", "4G", "--time", "1:00:00", "--partition", "p",
         "JOB=1:2", str(tmp_path / "log.JOB"), "python", "-m", "x", "--part", "JOB", "it's"],
        env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    calls = sorted(tmp_path.glob("sbatch_calls.*"))
    assert len(calls) == 2
    args = {}
    for call in calls:
        lines = call.read_text().splitlines()
        wrap = next(a for a in lines if a.startswith("--wrap="))
        index = 1 if "--part 1" in wrap else 2
        args[index] = lines
        assert f"--output={tmp_path}/log.{index}" in lines
        for expected in ("--wait", "--parsable", "--open-mode=append", "--mem=4G", "--time=1:00:00",
                         "--gres=gpu:1", "--partition=p", f"--chdir={tmp_path}"):
            assert expected in lines, (expected, lines)
        assert f"python -m x --part {index} it\\'s" in wrap
        assert "attempt started" in wrap
    assert set(args) == {1, 2}
    assert not (tmp_path / "scancel_calls").exists()


def test_run_slurm_failing_job_cancels_the_others(tmp_path):
    env = fake_slurm(tmp_path)
    started = time.time()
    result = subprocess.run(
        [str(RUN_SLURM), "JOB=1:2", str(tmp_path / "log.JOB"), "some_job", "mode_JOB"],
        env=env, capture_output=True, text=True, timeout=40, cwd=tmp_path,
    )
    elapsed = time.time() - started
    assert result.returncode != 0
    assert elapsed < 30, f"run_slurm.sh waited {elapsed:.0f} s for the other job"
    assert "log.1" in result.stderr
    sleeper = int(wait_for_file(tmp_path / "sleeping_sbatch"))
    assert "1002" in (tmp_path / "scancel_calls").read_text().split()
    time.sleep(0.2)
    assert not alive(sleeper)


# ---- run.sh: background teachers ----


def run_sh_option(name: str) -> str:
    """The value run.sh passes to scripts/oracle_asr.sh for --<name> (its recipe default)."""
    found = re.findall(rf'--{name} ("[^"]*"|\S+)', (ROOT / "run.sh").read_text())
    assert len(found) == 1, (name, found)
    return found[0].strip('"')


def test_run_sh_failing_background_teacher_ends_the_other(tmp_path):
    """Stages 4 and 5 side by side: when the conventional teacher's training fails, the Oracle
    Teacher's (still running) is ended and run.sh stops at once, naming the failed stage."""
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    for name in ("conf", "local", "db.sh"):
        (recipe / name).symlink_to(ROOT / name)
    fake = write_exe(tmp_path / "fake_train.sh", (
        "#!/usr/bin/env bash\n"
        'case "$1" in\n'
        "  *teacher_conventional*) sleep 1; echo 'fake failure' >> \"$1\"; exit 1 ;;\n"
        f"  *) echo $$ > {tmp_path}/sleeper.pid; exec sleep 60 ;;\n"
        "esac\n"
    ))
    (recipe / "cmd.sh").write_text(f'export train_cmd="{fake}" decode_cmd="{fake}"\n')
    # what stages 1-3 leave for stage 4 with run.sh's defaults (token type; the training set,
    # data/<train_set>_sp with speed perturbation)
    tokens = recipe / "data" / "token_list" / run_sh_option("token_type") / "tokens.txt"
    tokens.parent.mkdir(parents=True)
    tokens.write_text("<blank>\n<unk>\na\n<sos/eos>\n")
    train_set = run_sh_option("train_set") + ("_sp" if run_sh_option("speed_perturb_factors") else "")
    (recipe / "dump" / "fbank" / train_set).mkdir(parents=True)
    (recipe / "dump" / "fbank" / train_set / "feats_stats.npz").write_bytes(b"fake")
    started = time.time()
    result = subprocess.run(
        [str(ROOT / "run.sh"), "--stage", "4", "--stop_stage", "5", "--ngpu", "0"],
        cwd=recipe, capture_output=True, text=True, timeout=50,
    )
    elapsed = time.time() - started
    sleeper = int(wait_for_file(tmp_path / "sleeper.pid"))
    time.sleep(0.2)
    assert result.returncode != 0, result.stdout
    assert elapsed < 40, f"run.sh waited {elapsed:.0f} s for the sibling of the failed teacher"
    assert not alive(sleeper), "the Oracle Teacher's training still runs after the other teacher failed"
    assert "stage 4 (conventional teacher" in result.stderr
