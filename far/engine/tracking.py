"""MLflow tracking for one fine-tune, tolerant of an unreachable store.

One fine-tune = one MLflow run. The run id is stored in the training checkpoint so a
resumed job continues the same run. Only rank 0 constructs a :class:`Tracker`; other
ranks use :class:`NullTracker`.

If the store cannot be reached (at start or later), the tracker warns *once*, turns
itself off and training goes on; the metrics are in ``OUT/metrics.jsonl`` anyway.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

# mlflow's HTTP client retries with exponential back-off for minutes by default; a
# training job should not stall on a dead tracking server. Users can still override.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
_MAX_PARAM_LEN = 6000  # mlflow's limit for a param value
# Stores found unreachable in this process: not retried (each retry costs seconds) and
# not warned about again, so a job says it once.
_UNREACHABLE: set[str] = set()


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"optim": {"lr": 1}} -> {"optim.lr": "1"}; lists become their repr."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out |= flatten(v, key + ".")
        else:
            out[key] = str(v)[:_MAX_PARAM_LEN]
    return out


def resolve_uri(configured: str) -> str:
    """``MLFLOW_TRACKING_URI`` wins; a relative sqlite path is made absolute (cwd)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


class NullTracker:
    """Does nothing (ranks > 0, tracking disabled, or store unreachable)."""

    run_id: str | None = None
    active = False

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class Tracker(NullTracker):
    """A live MLflow run; every call is guarded (first failure: one warning, then off)."""

    def __init__(self, uri: str, experiment: str, run_name: str | None, run_id: str | None = None,
                 description: str | None = None):
        for k, v in _HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        self.uri = uri
        self.active = False
        self.run_id = run_id
        self._client = None
        self._warned = False
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            if run_id is not None:
                run = client.get_run(run_id)  # resume: continue the same run
                if run.info.status != "RUNNING":
                    client.update_run(run_id, status="RUNNING")
            else:
                exp = client.get_experiment_by_name(experiment)
                # The description is what MLflow's UI shows above the experiment's runs.
                tags = {"mlflow.note.content": description} if description else None
                exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment, tags=tags)
                run = client.create_run(exp_id, run_name=run_name)
                self.run_id = run.info.run_id
            self._client = client
            self.active = True
            log.info("MLflow: run %s in %s", self.run_id, uri)
        except Exception as err:  # noqa: BLE001 - any store failure must not stop training
            self._warn(err)

    def _warn(self, err: BaseException) -> None:
        _UNREACHABLE.add(self.uri)
        if not self._warned:
            log.warning("MLflow tracking store %s unreachable (%s: %s); training continues, metrics only in the output folder", self.uri, type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            self._warned = True
        self.active = False

    def _call(self, fn_name: str, *args: Any, **kwargs: Any) -> None:
        if not self.active or self._client is None:
            return
        try:
            getattr(self._client, fn_name)(self.run_id, *args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._warn(err)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if not self.active:
            return
        # A resumed run re-logs identical params: skip those already there (mlflow
        # refuses to change a param, and would fail the whole batch).
        try:
            existing = self._client.get_run(self.run_id).data.params  # type: ignore[union-attr]
        except Exception as err:  # noqa: BLE001
            self._warn(err)
            return
        items = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):  # mlflow's batch limit
            self._call("log_batch", params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items() if v is not None]
        if items:
            self._call("log_batch", metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        if items:
            self._call("log_batch", tags=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._call("log_artifact", str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self._call("set_terminated", status=status)

    def close_abandoned(self, out: Path) -> None:
        """Mark the run of the previous attempt in ``out`` KILLED when this attempt does not
        continue it (a job killed before its first checkpoint, or restarted with
        ``--no-resume``); a SIGKILL leaves no chance to do it then, so it stays RUNNING.
        ``out``/.mlflow_run_id names the run of the latest attempt."""
        if not self.active or self._client is None:
            return
        marker = Path(out) / RUN_ID_FILE
        previous = marker.read_text().strip() if marker.is_file() else ""
        if previous and previous != self.run_id:
            try:
                if self._client.get_run(previous).info.status == "RUNNING":
                    self._client.set_tag(previous, "far.superseded_by", self.run_id)
                    self._client.set_terminated(previous, status="KILLED")
                    log.info("MLflow: run %s of an earlier attempt in %s marked KILLED", previous, out)
            except Exception as err:  # noqa: BLE001 - e.g. a run of another store: leave it
                log.warning("MLflow: could not close the earlier attempt's run %s (%s)", previous, err)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{self.run_id}\n")


RUN_ID_FILE = ".mlflow_run_id"


def make_tracker(enabled: bool, uri: str, experiment: str, run_name: str | None, run_id: str | None, is_main: bool,
                 out: Path | None = None, description: str | None = None) -> NullTracker:
    """The rank-0 MLflow run (continuing ``run_id`` when given), or a :class:`NullTracker`.
    With ``out`` (a training output folder), an earlier attempt's run there that this one
    does not continue is marked KILLED (:meth:`Tracker.close_abandoned`)."""
    if not (enabled and is_main):
        return NullTracker()
    uri = resolve_uri(uri)
    if uri in _UNREACHABLE:
        return NullTracker()
    tracker = Tracker(uri, experiment, run_name, run_id, description)
    if out is not None:
        tracker.close_abandoned(out)
    return tracker
