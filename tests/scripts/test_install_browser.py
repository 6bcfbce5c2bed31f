"""scripts/install-browser waits for a held package-manager lock (bounded) and fails loudly in CI."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_service

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-browser"
TOOLS = ("bash", "grep", "sleep", "id", "chmod")


def _fake_path(tmp_path: Path, apt_get: str) -> Path:
    """A PATH with no browser, the few tools the script uses, and a scripted apt-get."""
    if os.geteuid() != 0:  # the script installs as root or with sudo; CI runs as root
        require_service("these checks run the install step, which needs root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        for folder in ("/usr/bin", "/bin"):
            if Path(folder, tool).exists():
                (bin_dir / tool).symlink_to(Path(folder, tool))
                break
    (bin_dir / "apt-get").write_text("#!/bin/bash\n" + apt_get)
    (bin_dir / "apt-get").chmod(0o755)
    return bin_dir


def _run(bin_dir: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(bin_dir), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_waits_while_another_process_holds_the_lock_then_installs(tmp_path):
    # apt-get reports a held lock twice, then succeeds; the install step puts a browser on PATH.
    calls = tmp_path / "calls"
    bin_dir = _fake_path(
        tmp_path,
        f"""echo "$*" >> {calls}
count=0
while read -r _; do count=$((count + 1)); done < {calls}
if [ "$count" -le 2 ]; then
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
  exit 100
fi
case "$*" in *install*) echo '#!/bin/bash' > {tmp_path}/bin/chromium; chmod +x {tmp_path}/bin/chromium ;; esac
exit 0
""",
    )
    done = _run(bin_dir, PIPELINES_APT_LOCK_TIMEOUT="30")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("another apt/dpkg process holds the lock; waiting") == 2
    assert f"installed {bin_dir / 'chromium'}" in done.stdout
    lines = calls.read_text().splitlines()
    assert all("DPkg::Lock::Timeout=30" in line for line in lines)
    assert lines[-1].endswith("install -y -qq --no-install-recommends chromium")


def test_a_lock_held_past_the_bound_fails_in_ci_and_only_warns_outside(tmp_path):
    bin_dir = _fake_path(
        tmp_path,
        'echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (dpkg)" >&2\nexit 100\n',
    )
    ci = _run(bin_dir, PIPELINES_APT_LOCK_TIMEOUT="1", CI="true")
    assert ci.returncode == 1
    assert "the package manager's lock was still held after 1 s" in ci.stderr
    assert "set PIPELINES_APT_LOCK_TIMEOUT to wait longer" in ci.stderr
    local = _run(bin_dir, PIPELINES_APT_LOCK_TIMEOUT="1")
    assert local.returncode == 0 and "could not install chromium" in local.stderr
