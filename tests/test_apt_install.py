"""scripts/apt_install.sh (the recipes' local/install_*.sh): presence by file or command, --check
reports what is missing, and without apt-get it refuses with the caller's name and hint."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "apt_install.sh"


def run(*args, path="/usr/bin:/bin"):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": path})


def test_present_packages_are_left_alone(tmp_path):
    (tmp_path / "shipped").touch()
    result = run("install_x.sh", f"pkg-a={tmp_path / 'shipped'}", "pkg-b=command:bash")
    assert result.returncode == 0 and "installed: pkg-a pkg-b" in result.stdout, result.stderr


def test_check_names_the_missing_package(tmp_path):
    result = run("install_x.sh", "--check", f"pkg-a={tmp_path / 'absent'}", "pkg-b=command:no-such-cmd-x",
                 "pkg-c=command:bash")
    assert result.returncode == 1
    assert "install_x.sh: missing: pkg-a pkg-b" in result.stderr


def test_without_apt_get_it_refuses_with_the_hint(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id"):  # a PATH without apt-get
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    result = run("install_x.sh", "--hint", "or pass --text_file", f"pkg-a={tmp_path / 'absent'}", path=str(bin_dir))
    assert result.returncode == 1
    assert "install_x.sh: ERROR: no apt-get here; install pkg-a by hand (or pass --text_file)" in result.stderr
