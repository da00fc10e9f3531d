"""Before timing: the repository's GPU equality tests, run on the GPU that will be timed.

``far bench`` times the fast path only where it computes the definition: it runs
``pytest -m gpu`` on :data:`GPU_TESTS` (the Triton kernels against Conv3d, the benchmarked
models against natural token order with masks and Conv3d, fp32 and bf16, outputs and
gradients) in a subprocess, and times nothing unless every selected test passed. A
skipped test (no CUDA, no Triton) counts as not checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

GPU_TESTS = ("tests/test_kernels.py", "tests/test_gpu_equality.py")
REPO = Path(__file__).resolve().parents[2]


class GateError(RuntimeError):
    """The GPU equality tests did not all pass (or could not run): nothing is timed."""


def junit_summary(path: Path) -> dict[str, Any]:
    """tests, failures, errors and skipped summed over a JUnit XML report's suites, and the
    properties the tests recorded (``record_property``: the relative errors), by test."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    out: dict[str, Any] = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    out["properties"] = {f"{c.get('classname')}::{c.get('name')}": {p.get("name"): p.get("value") for p in c.iter("property")}
                         for s in suites for c in s.iter("testcase") if c.find("properties") is not None}
    return out


def run_gpu_tests(repo: Path = REPO) -> dict[str, Any]:
    """Run the GPU equality tests of ``repo``; return the command, the counts, the recorded
    errors and the seconds taken, or raise :class:`GateError` unless at least one ran and
    all passed."""
    paths = [repo / p for p in GPU_TESTS]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise GateError(f"far bench checks the fast path with the repository's GPU tests, missing here: "
                        f"{', '.join(missing)}; run it from a checkout, or pass --no-check")
    # legacy JUnit: the format that holds the errors the tests record per test case
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-o", "junit_family=legacy",
           *GPU_TESTS]
    # The report goes to a temporary folder and no bytecode is written: the check leaves
    # nothing in the repository.
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    with tempfile.TemporaryDirectory(prefix="far-bench-") as tmp:
        report = Path(tmp) / "gpu-tests.xml"
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, f"--junitxml={report}"], cwd=repo, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        counts = junit_summary(report) if report.exists() else {}
    result = dict(command=" ".join(cmd[1:]), returncode=proc.returncode, seconds=round(seconds, 1), **counts)
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode != 0 or not counts or counts["tests"] == 0 or counts["skipped"] or counts["failures"] or counts["errors"]:
        raise GateError(f"far bench: the GPU equality tests did not all pass ({summary}); nothing timed. "
                        f"Output:\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}")
    result["summary"] = summary
    return result
