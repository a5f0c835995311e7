"""The installable package and the set-up script: one list of dependencies in three files, a non-editable install
that works away from the checkout (notebooks, assignment files and template inside the installed copy, reports and
data outside it), and run.sh's hashing where sha256sum is missing (macOS)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from helpers.cli.runner import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash")


def requirements(lines) -> dict[str, str]:
    """{canonical name: specifier} of requirement lines (comments, blank lines, -r and -e lines left out)."""
    from packaging.utils import canonicalize_name

    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = str(req.specifier)
    return out


def test_pyproject_requirements_and_environment_name_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = requirements(project["dependencies"])
    dev = requirements(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "torch" in runtime and "distributed" in runtime and "pytest" in dev
    assert requirements((ROOT / "requirements.txt").read_text().splitlines()) == runtime
    assert requirements((ROOT / "requirements-dev.txt").read_text().splitlines()) == dev
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()
    assert requirements(pip_section) == {**runtime, **dev}
    assert set(requirements(project["optional-dependencies"]["test"])) <= set(dev)


# --- pip install . -------------------------------------------------------------------------------------------------

# the checkout's own folders of data, reports and tools, at its top only (helpers/data is the package's data room)
TOP_LEVEL_OUT = {".git", ".venv", "data", "reports", "checkpoints", "build", "dist", "tests", "scripts"}
ANYWHERE_OUT = shutil.ignore_patterns("*.egg-info", "__pycache__", ".*_cache")


def KEEP_OUT(folder, names):  # noqa: N802  (shutil.copytree's ignore callable)
    """What the copy leaves out: :data:`TOP_LEVEL_OUT` at the checkout's top, caches anywhere."""
    top = {n for n in names if n in TOP_LEVEL_OUT} if Path(folder).resolve() == ROOT else set()
    return top | ANYWHERE_OUT(folder, names)

PROBE = """
import json
import helpers, helpers.engine.config as config, helpers.data.fashion as data, helpers.paths as paths
import helpers.reporting.export as export
from helpers.cli.runner import NOTEBOOKS_DIR, SECTIONS, notebook_path
print(json.dumps({
    "package": helpers.__file__, "checkout": str(paths.CHECKOUT), "root": str(paths.PROJECT_ROOT),
    "notebooks": str(NOTEBOOKS_DIR), "found": [notebook_path(s).is_file() for s in SECTIONS],
    "assignments": len(list((NOTEBOOKS_DIR / "assignments").glob("*/*.yaml"))),
    "template": str(export.TEMPLATE_DIR / "report" / "index.html.j2"),
    "template_found": (export.TEMPLATE_DIR / "report" / "index.html.j2").is_file(),
    "output_dir": config.resolve_output_dir(None, "mlp"), "data_dir": str(data.PROJECT_DATA_DIR),
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install .`` (not editable) of a copy of this checkout into a folder of its own, and an environment
    that sees only that copy of ``helpers`` (dependencies from this interpreter), a private HOME and a working
    folder far from both."""
    base = tmp_path_factory.mktemp("install")
    source, target, home, cwd = base / "source", base / "target", base / "home", base / "elsewhere"
    shutil.copytree(ROOT, source, ignore=KEEP_OUT)
    home.mkdir()
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(target), str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("FASHION_REPORT_ROOT", "XDG_CACHE_HOME", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), HOME=str(home), HELPERS_PROGRESS="0")
    return {"target": target, "home": home, "cwd": cwd, "env": env}


def run_installed(installed, *args, timeout=300):
    return subprocess.run(args, cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                          timeout=timeout)


def test_installed_copy_has_the_notebooks_and_template_and_writes_outside_it(installed):
    done = run_installed(installed, sys.executable, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    package = installed["target"] / "helpers"
    assert Path(found["package"]).parent == package  # the installed copy, not this checkout
    assert found["checkout"] == "None"
    assert Path(found["notebooks"]) == package / "notebooks" and all(found["found"])
    assert found["assignments"] == len(list((ROOT / "notebooks" / "assignments").glob("*/*.yaml"))) > 0
    assert found["template_found"] and Path(found["template"]).is_relative_to(package)
    # reports under the working folder, data in the user's folder: never inside site-packages
    assert Path(found["root"]) == installed["cwd"].resolve()
    assert Path(found["output_dir"]) == installed["cwd"].resolve() / "reports" / "mlp"
    assert Path(found["data_dir"]) == installed["home"] / ".cache" / "fashion-report" / "data"


def test_installed_command_lists_every_notebook_parameter(installed):
    script = installed["target"] / "bin" / "fashion-report"
    done = run_installed(installed, str(script), "params")
    assert done.returncode == 0, done.stderr
    assert "parameters unavailable" not in done.stdout
    for section, (notebook, _) in SECTIONS.items():
        assert f"{section}: " in done.stdout and notebook in done.stdout
    assert 'profile = "quick"' in done.stdout
    helped = run_installed(installed, sys.executable, "-m", "helpers", "run", "--help")
    assert helped.returncode == 0 and "--output-dir" in helped.stdout and "author_name" in helped.stdout


def shipped(installed) -> set:
    """The installed package's files (caches aside)."""
    return {p.relative_to(installed["target"]) for p in (installed["target"] / "helpers").rglob("*")
            if "__pycache__" not in p.parts and p.is_file()}


@pytest.mark.slow
def test_installed_command_writes_a_report_in_the_working_folder(installed, fake_data_dir):
    script = installed["target"] / "bin" / "fashion-report"
    before = shipped(installed)
    done = run_installed(installed, str(script), "run", "mlp", "--profile", "smoke", "--formats", "html", "--quiet",
                         "-p", "data_dir", str(fake_data_dir), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    out = installed["cwd"] / "reports" / "mlp"
    assert (out / "metrics.json").is_file() and (out / "mlp.html").is_file()
    assert json.loads((out / "metrics.json").read_text())["profile"] == "smoke"
    # nothing written into the installed package: only its own files (the data room's modules among them)
    assert shipped(installed) == before


# --- run.sh --------------------------------------------------------------------------------------------------------

def source_run_sh(call: str, *, tools: dict[str, str], tmp_path: Path, env: dict | None = None):
    """Run ``call`` after ``source run.sh`` with a PATH holding only ``tools`` (name -> program)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, program in tools.items():
        (bin_dir / name).symlink_to(program)
    return subprocess.run([BASH, "-c", f"source ./run.sh && {call}"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path), **(env or {})}, timeout=60)


def expected_digest() -> str:
    import hashlib

    return hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in
                                   ("requirements.txt", "requirements-dev.txt", "pyproject.toml"))).hexdigest()


def coreutils() -> dict[str, str]:
    return {name: shutil.which(name) for name in ("cat", "cut")}


def test_run_sh_hashes_with_shasum_where_sha256sum_is_missing(tmp_path):
    calls = tmp_path / "shasum-calls"
    fake = tmp_path / "shasum"  # macOS's shasum, played by Python
    fake.write_text(f"#!{sys.executable}\nimport hashlib, sys\nopen({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]))\n"
                    "assert sys.argv[1:] == ['-a', '256'], sys.argv\n"
                    "print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest() + '  -')\n")
    fake.chmod(0o755)
    done = source_run_sh("requirements_digest", tools={**coreutils(), "shasum": str(fake)}, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected_digest()
    assert calls.read_text() == "-a 256"


def test_run_sh_hashes_with_python_when_neither_tool_is_there(tmp_path):
    done = source_run_sh("requirements_digest", tools=coreutils(), tmp_path=tmp_path, env={"PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected_digest()


@pytest.mark.skipif(not shutil.which("sha256sum"), reason="no sha256sum on this machine")
def test_run_sh_hashes_with_sha256sum(tmp_path):
    done = source_run_sh("requirements_digest", tools={**coreutils(), "sha256sum": shutil.which("sha256sum")},
                         tmp_path=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == expected_digest()


def test_run_sh_finds_chromium_named_by_the_environment(tmp_path):
    browser = tmp_path / "My Chrome" / "chrome"
    browser.parent.mkdir()
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    done = source_run_sh("find_chromium", tools={}, tmp_path=tmp_path, env={"CHROMIUM": str(browser)})
    assert done.returncode == 0 and done.stdout.strip() == str(browser)
    missing = source_run_sh("find_chromium", tools={}, tmp_path=tmp_path, env={"CHROMIUM": str(tmp_path / "none")})
    assert missing.returncode != 0 and not missing.stdout.strip()


def test_run_sh_without_a_command_prints_its_usage():
    done = subprocess.run([BASH, str(ROOT / "run.sh")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bash run.sh test" in done.stdout and "set -e" not in done.stdout


def test_run_sh_data_finds_the_data_through_the_venvs_python(tmp_path, fake_data_dir):
    """The data step of `bash run.sh reports` and `bash run.sh test`, run as they run it (with this test's Python
    as the venv's): it must import what it calls and say where the data is."""
    done = source_run_sh("get_data", tools={"printf": shutil.which("printf")}, tmp_path=tmp_path,
                         env={"VENV": sys.prefix, "FASHION_MNIST_DIR": str(fake_data_dir)})
    assert done.returncode == 0, done.stderr
    assert f"found: {fake_data_dir}" in done.stdout
