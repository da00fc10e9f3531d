"""``far train --profile DIR``: where a training step's time goes, host and device.

torch.profiler records optimizer steps ``[start, start + steps)`` of the invocation (after
the compilation and the loader's warm-up) and writes to ``DIR``:

- ``trace.json``: the Chrome / Perfetto trace (open it in ui.perfetto.dev);
- ``ops.txt``: the operators by self host (CPU) time and by self device time, per step.

Host time above the device's per step means the GPU waits for Python (launches, loader,
synchronisations); the trace shows where.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class StepProfiler:
    """Profile optimizer steps ``[start, start + steps)``; call :meth:`after_step` after each."""

    def __init__(self, out: str | Path, start: int = 20, steps: int = 5) -> None:
        self.out, self.start, self.steps = Path(out), start, steps
        self.done = 0
        self.prof: Any = None

    def after_step(self) -> None:
        self.done += 1
        if self.done == self.start:
            import torch
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self.prof = profile(activities=activities)
            self.prof.__enter__()
        elif self.prof is not None and self.done == self.start + self.steps:
            self.close()

    def close(self) -> None:
        """Stop (if recording) and write the trace and the tables."""
        if self.prof is None:
            return
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        prof, self.prof = self.prof, None
        prof.__exit__(None, None, None)
        self.out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out / "trace.json"))
        ka = prof.key_averages()
        n = max(1, self.done - self.start)
        device = "self_device_time_total" if ka and hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
        with (self.out / "ops.txt").open("w") as f:
            f.write(f"# {n} optimizer steps from step {self.start}; totals over them\n\n")
            f.write("## by self host (CPU) time\n")
            f.write(ka.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=80) + "\n\n")
            if torch.cuda.is_available():
                f.write("## by self device time\n")
                f.write(ka.table(sort_by=device, row_limit=40, max_name_column_width=80) + "\n")
        log.info("profile of %d steps written to %s (trace.json, ops.txt)", n, self.out)
