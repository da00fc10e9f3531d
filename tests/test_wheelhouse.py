"""The wheelhouse for a GPU node with no network (tools/wheelhouse.txt, tools/make-wheelhouse.sh).

Every runtime dependency in pyproject.toml must be accounted for in tools/wheelhouse.txt:
in the node's image, in the wheelhouse, or named as not needed there with a reason. A new
dependency that nobody added there fails here. No network: the script runs as --dry-run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "tools" / "wheelhouse.txt"
SCRIPT = ROOT / "tools" / "make-wheelhouse.sh"
SECTIONS = ("image", "wheel", "build", "not-needed")


def normalise(name: str) -> str:
    """PEP 503: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert match, f"unparsable requirement {req!r} in pyproject.toml"
    return normalise(match.group(1))


def read_list() -> dict[str, dict[str, str]]:
    """section -> {normalised name: the rest of the line (a reason, for [not-needed])}.

    Read as the script reads it: ``#`` starts a comment, ``[name]`` starts a section,
    a line's first word is the package."""
    out: dict[str, dict[str, str]] = {}
    section = None
    for lineno, raw in enumerate(LIST.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[]")
            assert section in SECTIONS, f"{LIST.name}:{lineno}: unknown section [{section}]"
            assert section not in out, f"{LIST.name}:{lineno}: [{section}] twice"
            out[section] = {}
            continue
        assert section, f"{LIST.name}:{lineno}: a package before any [section]"
        name, _, rest = line.partition(" ")
        assert "=" not in name and "<" not in name and ">" not in name, (
            f"{LIST.name}:{lineno}: {name}: no versions here (they come from the venv)")
        out[section][normalise(name)] = rest.strip()
    return out


def dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {requirement_name(r) for r in project["dependencies"]}


def test_every_dependency_is_accounted_for_on_the_gpu_node():
    listed = read_list()
    assert set(listed) == set(SECTIONS), f"{LIST.name} needs the sections {SECTIONS}"
    seen: dict[str, str] = {}
    for section, names in listed.items():
        for name in names:
            assert name not in seen, f"{name} is under both [{seen[name]}] and [{section}] in {LIST.name}"
            seen[name] = section
    missing = sorted(dependencies() - seen.keys())
    assert not missing, (
        f"runtime dependencies not in {LIST.relative_to(ROOT)}: {missing}. Say where each comes "
        "from on a GPU node with no network: [image], [wheel], [build], or [not-needed] with a reason")


def test_not_needed_entries_give_a_reason_and_are_dependencies():
    not_needed = read_list()["not-needed"]
    for name, reason in not_needed.items():
        assert len(reason.split()) >= 3, f"[not-needed] {name}: give the reason after the name"
    # a stale entry would hide nothing, but would say something untrue about the project
    stale = sorted(not_needed.keys() - dependencies())
    assert not stale, f"[not-needed] names packages pyproject.toml does not declare: {stale}"


def test_the_image_section_names_what_the_node_is_assumed_to_have():
    image = read_list()["image"]
    for name in ("torch", "triton", "timm", "numpy", "pandas", "pyyaml", "tqdm", "matplotlib", "psutil"):
        assert name in image, f"[image] should name {name}"


def test_script_is_bash_clean():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_downloads_the_listed_packages_for_the_target(tmp_path):
    """--dry-run: the pip commands, no network. Every [wheel] and [build] package is asked
    for, none from [image], and the binary wheels are for the target, not this machine."""
    env = {**os.environ, "PYTHON_VERSION": "3.12", "VENV_PY": sys.executable}
    run = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path / "whl")], env=env,
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    download = next(line for line in lines if " pip download " in line)
    build = next(line for line in lines if " pip wheel " in line)
    for flag in ("--only-binary=:all:", "--python-version 3.12", "--implementation cp",
                 "--platform manylinux_2_17_x86_64", "--no-deps"):
        assert flag in download, f"pip download lacks {flag}: {download}"
    assert "DS_BUILD_OPS=0" in build and "--no-deps" in build, build

    def asked(line: str) -> set[str]:
        return {requirement_name(w) for w in line.split() if "==" in w}

    listed = read_list()
    assert asked(download) == set(listed["wheel"]), download
    assert asked(build) == set(listed["build"]), build
    assert not (asked(download) | asked(build)) & set(listed["image"])
    assert not (tmp_path / "whl").exists(), "--dry-run made the output folder"


def test_what_the_wheels_need_is_in_the_image_or_the_wheelhouse():
    """The wheels are installed --no-deps: each one's own requirements (as the venv's
    metadata states them) must be in [image], [wheel] or [build]."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    listed = read_list()
    present = set(listed["image"]) | set(listed["wheel"]) | set(listed["build"])
    for name in sorted(set(listed["wheel"]) | set(listed["build"])):
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not in this venv: the script warns when it builds
        for req in map(Requirement, requires):
            if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.12"}):
                assert normalise(req.name) in present, (
                    f"{name} requires {req.name}, which is neither in the image nor in the wheelhouse")
