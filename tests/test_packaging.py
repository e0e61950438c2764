"""The package as pip sees it: one version, every imported library declared, and a wheel that
works outside the checkout (``fedlearn bench`` included: it ships its benchmark scripts)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import fedlearn

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BENCHMARKS = ROOT / "benchmarks"
# Ours: the packages, and the benchmark scripts, which `fedlearn bench` imports by file name.
OURS = {"fedlearn", "workers"} | {p.stem for p in BENCHMARKS.glob("*.py")}


def _dist_name(requirement: str) -> str:
    return re.split(r"[\[<>=;~! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def imported_modules(folders: list[Path]) -> set[str]:
    """Top-level modules imported (absolutely) by the Python files under ``folders``."""
    names: set[str] = set()
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - OURS - {"__future__"}


def test_the_version_is_written_once() -> None:
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert importlib.metadata.version("fedlearn") == fedlearn.__version__


def test_every_library_the_package_imports_is_declared() -> None:
    declared = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    by_module = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(imported_modules([ROOT / "fedlearn", ROOT / "workers"])):
        dists = {d.lower().replace("_", "-") for d in by_module.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    assert missing == {}, f"imported but not in [project].dependencies: {missing}"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_wheel_installed_in_a_fresh_venv_runs_fedlearn_bench(tmp_path: Path) -> None:
    """Built with pip (build isolation: setuptools as pyproject asks), installed in a new venv
    without its dependencies, which come from this test environment through a path entry
    (a full resolve from the package index takes minutes; the declared dependencies are
    checked above). Run from outside the checkout, so nothing can come from the source tree."""
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    (wheel,) = wheels.glob("fedlearn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "fedlearn/py.typed",
        "fedlearn/api/static/docs.html",
        "fedlearn/api/static/vendor/swagger-ui-bundle.js",
        f"fedlearn-{fedlearn.__version__}.dist-info/licenses/LICENSE",
        f"fedlearn-{fedlearn.__version__}.data/data/share/fedlearn/benchmarks/suite.py",
        f"fedlearn-{fedlearn.__version__}.data/data/share/fedlearn/client_js/types/fedlearn.d.ts",
    ):
        assert shipped in names, shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    venv_pip = [python, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps"]
    subprocess.run([*venv_pip, str(wheel)], check=True)
    # The dependencies: this environment's site-packages, after the venv's own (a plain path
    # line, so the checkout's editable-install hook in there is not run).
    here = next(p for p in sys.path if p.endswith("site-packages"))
    (Path(site) / "deps.pth").write_text(here + "\n")

    where = subprocess.run(
        [python, "-c", "import fedlearn; print(fedlearn.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where
    fedlearn_cmd = venv / "bin" / "fedlearn"
    helped = subprocess.run(
        [fedlearn_cmd, "bench", "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--quick" in helped.stdout, helped.stderr
    ran = subprocess.run(
        [fedlearn_cmd, "bench", "--quick", "--only", "update"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "online update, events/s" in ran.stdout
    # ... and this environment still has the checkout's fedlearn (nothing installed over it).
    ours = subprocess.run(
        [sys.executable, "-c", "import fedlearn; print(fedlearn.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert ours.startswith(str(ROOT)), ours
