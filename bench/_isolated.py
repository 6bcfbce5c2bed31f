"""A side that needs its own interpreter: a venv in the cache, created on first use.

Some baselines cannot share the project's venv: dlt needs pendulum>=3 while Prefect 2 needs
pendulum<3. Such a side runs a script in an :class:`IsolatedPython`; the script times its own
work (imports excluded, as in-process sides are timed) and prints one ``BENCH-RESULT {json}``
line, e.g. with ``bench._child.report(seconds=...)``; the side returns that number as a
:class:`bench.Measurement`::

    DLT = IsolatedPython("dlt", ("dlt[postgres]>=1", "polars", "pyarrow"))

    def baseline():
        _, values = DLT.run(context.cache, SCRIPT, "--csv", str(csv_path))
        return Measurement(values["seconds"], values)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

from bench import _cachelock, _child

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class IsolatedPython:
    name: str
    requirements: tuple[str, ...] = ()

    def folder(self, cache: Path) -> Path:
        digest = hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:10]
        return cache / "venvs" / f"{self.name}-{digest}"

    def python(self, cache: Path) -> Path:
        return self.folder(cache) / "bin" / "python"

    @property
    def override_variable(self) -> str:
        return f"BENCH_{self.name.upper()}_PYTHON"

    def ensure(self, cache: Path) -> Path:
        """The venv's python, creating the venv and installing the requirements the first time.

        ``BENCH_<NAME>_PYTHON`` (e.g. ``BENCH_DLT_PYTHON``) names an existing interpreter that already
        has the requirements, used instead (for machines without access to the package index).
        """
        override = os.environ.get(self.override_variable)
        if override:
            if not os.access(override, os.X_OK):
                raise RuntimeError(
                    f"{self.override_variable}={override} is not an executable Python; point it at the "
                    f"python of a venv holding {', '.join(self.requirements)}, or unset it to let the "
                    "bench build its own venv in the cache."
                )
            return Path(override)
        folder = self.folder(cache)
        marker = folder / ".ready"
        if marker.exists():
            return self.python(cache)
        with _cachelock.building(folder):
            if marker.exists():  # built by another process while this one waited
                return self.python(cache)
            venv.EnvBuilder(clear=True, with_pip=bool(self.requirements), symlinks=True).create(folder)
            if self.requirements:
                command = [
                    str(self.python(cache)),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "-q",
                ]
                done = subprocess.run([*command, *self.requirements], capture_output=True, text=True)
                if done.returncode != 0:
                    tail = "\n".join(done.stderr.strip().splitlines()[-10:])
                    raise RuntimeError(
                        f"could not install {', '.join(self.requirements)} into the {self.name!r} bench venv "
                        f"({folder}):\n{tail}\nCheck the requirement names and that the package index is "
                        "reachable; the venv is rebuilt on the next run."
                    )
            marker.write_text("\n".join(self.requirements) + "\n")
        return self.python(cache)

    def run(
        self,
        cache: Path,
        script: Path | str,
        *args: str,
        timeout: float = 1800,
        env: dict[str, str] | None = None,
    ) -> tuple[float, dict]:
        """Run a script in the venv; returns (wall seconds, the values it reported).

        The repo root is on PYTHONPATH so the script can use bench._child.report; nothing of the
        project's venv is visible to it; ``env`` adds variables (e.g. the side's credentials).
        """
        python = self.ensure(cache)
        child = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
        child.update(env or {})
        child["PYTHONPATH"] = str(REPO)
        return _child.run([str(python), str(script), *args], env=child, timeout=timeout)
