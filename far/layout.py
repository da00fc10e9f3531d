"""Where everything lives: the params file, and every path the pipeline reads or writes.

One place for paths. The Snakemake rules, ``far grid``, the reports and the engine take
them from here, so a folder is renamed in this module and nowhere else.

**Relative paths** (in a params file: ``recipes_file``, ``checkpoints_registry``,
``datasets.<d>.raw``/``root``; and every path below) are relative to the **project
root**: the folder Snakemake runs in, which holds the ``Snakefile``. A params file given
by an absolute path from elsewhere finds its project root as the nearest folder above it
that holds a ``Snakefile`` (else the params file's own folder), so
``far grid --params /abs/path/params/default.yaml list`` works from any directory.

The layout under the project root::

    data/raw/...                           downloads, or synthetic datasets (data/raw/synthetic/<d>)
    data/prepared/<mode>/<dataset>/        far data prepare: train.csv, val.csv, classes.json, report.json
    data/checkpoints/<file>                far fetch: official pre-trained weights
    data/checkpoints/offline/<job>/        far pretrain: checkpoint.pth, config.yaml (+ resumable states)
    results/runs/<run>/                    one fine-tune: see :class:`RunFiles`
    results/runs/released-<name>/          one released model's data check (test/, data_check.json)
    results/complexity.json                far complexity
    results/mlflow_experiment/<exp>.json   the MLflow experiment, created once
    logs/                                  job logs of the data, pre-training and report rules
    reports/                               Tables 1-8, figures, README
    reports/data_check.md                  far data check-report: released models on the user's data
    reports/gradcam/figure<N>/s<seed>/     far gradcam: Figures 6/7 (PNGs, maps/, choice.json, localisation.json)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from far.config import ConfigError, read_yaml

SCHEMA = Path(__file__).resolve().parent / "schemas" / "params.schema.yaml"
RESULTS = "results"
REPORTS = "reports"
LOGS = "logs"


@dataclass(frozen=True)
class RunFiles:
    """The files of one fine-tuning run folder (``far train --out``; ``far test`` writes
    ``test/``). Built from a real folder or from a Snakemake pattern (``results/runs/{run}``)."""

    dir: str

    def _f(self, name: str) -> str:
        return f"{self.dir}/{name}"

    run_config = property(lambda self: self._f("run.yaml"))  # written by `far grid run-config`
    config = property(lambda self: self._f("config.yaml"))  # the fully resolved config far train used
    history = property(lambda self: self._f("history.csv"))
    steps = property(lambda self: self._f("steps.csv"))  # training loss etc. at every log point
    metrics = property(lambda self: self._f("metrics.jsonl"))
    model = property(lambda self: self._f("model.pth"))
    summary = property(lambda self: self._f("train.json"))  # written last: the done-marker
    train_log = property(lambda self: self._f("train.log"))
    train_attempts = property(lambda self: self._f("train.attempts.log"))
    test_dir = property(lambda self: self._f("test"))
    test_metrics = property(lambda self: self._f("test/metrics.json"))
    test_predictions = property(lambda self: self._f("test/predictions.csv"))
    test_log = property(lambda self: self._f("test.log"))
    test_attempts = property(lambda self: self._f("test.attempts.log"))
    # A released model's check (folder released-<name>, no training files): far data check's
    # record (data_check.md beside it) and test/ as above.
    data_check = property(lambda self: self._f("data_check.json"))
    data_check_md = property(lambda self: self._f("data_check.md"))  # far data check --report
    data_check_log = property(lambda self: self._f("data_check.log"))

    def release(self, name: str, ext: str) -> str:
        """This run exported as a release ``name`` (far data stand-in): ``pth`` the weights in
        the official ``{"module": ...}`` layout, ``yaml`` its registry entry."""
        return self._f(f"release/{name}.{ext}")


@dataclass(frozen=True)
class PreparedFiles:
    """What ``far data prepare --out DIR`` writes (a real folder or a Snakemake pattern)."""

    dir: str

    train = property(lambda self: f"{self.dir}/train.csv")  # "path label" lines
    val = property(lambda self: f"{self.dir}/val.csv")
    classes = property(lambda self: f"{self.dir}/classes.json")
    report = property(lambda self: f"{self.dir}/report.json")  # counts, missing/unusable videos, video_root


#: The files ``far test`` writes into its output folder.
TEST_METRICS, TEST_PREDICTIONS = "metrics.json", "predictions.csv"
# history.csv of a fine-tune: one row per epoch (far.engine.train writes it, far.reports reads it).
HISTORY_COLUMNS = ("epoch", "step", "train_loss", "lr", "clips_per_s", "data_wait_share", "val_top1", "val_top5",
                   "wall_s")
# steps.csv: one row per log point (every log.every_steps optimizer steps); loss, pace and
# loader wait over the steps since the previous row (rank 0's micro-batches).
STEP_COLUMNS = ("epoch", "step", "loss", "lr", "clips_per_s", "data_wait_share")
#: What ``far gradcam`` leaves in a figure's folder besides the PNGs and ``maps/``: the videos it
#: chose and why, and ``far explain --score``'s summary (on data with object masks only).
GRADCAM_CHOICE, GRADCAM_LOCALISATION = "choice.json", "localisation.json"
GRADCAM_SCORES = "localisation.csv"  # far explain --score: one row per model x video (the claims' pairs)


def gradcam_figure(video: str | Path) -> str:
    """File name of ``far explain``'s figure of one video. Prefixed: video ids may start with
    "_" (K400's YouTube ids), which Snakemake's HTML report reads as a malformed RST target."""
    return f"video_{Path(video).stem}.png"
#: What an offline pre-training job leaves in its folder.
PRETRAIN_CHECKPOINT, PRETRAIN_CONFIG, PRETRAIN_METRICS = "checkpoint.pth", "config.yaml", "metrics.json"


@dataclass(frozen=True)
class Layout:
    """Every path of one params file's pipeline, relative to the project root."""

    mode: str  # "default" or "paper": the prepared lists of the two never mix

    def prepared(self, dataset: str) -> PreparedFiles:
        """A dataset's prepared lists (``far data prepare --out``)."""
        return PreparedFiles(f"data/prepared/{self.mode}/{dataset}")

    @staticmethod
    def synthetic_raw(dataset: str) -> str:
        return f"data/raw/synthetic/{dataset}"

    @staticmethod
    def offline_dir(job: str) -> str:
        """Folder of an offline pre-training job (``far pretrain --out``)."""
        return f"data/checkpoints/offline/{job}"

    def offline_checkpoint(self, job: str) -> str:
        return f"{self.offline_dir(job)}/{PRETRAIN_CHECKPOINT}"

    checkpoints = "data/checkpoints"  # far fetch's --dest

    @staticmethod
    def fetched(filename: str) -> str:
        """An official checkpoint fetched by ``far fetch``."""
        return f"{Layout.checkpoints}/{filename}"

    @staticmethod
    def run(run_id: str, results: str | Path = RESULTS) -> RunFiles:
        """The folder of fine-tuning run ``run_id`` (``results``: another results folder)."""
        return RunFiles(f"{results}/runs/{run_id}")

    complexity = f"{RESULTS}/complexity.json"
    dvc_status = f"{RESULTS}/dvc_status.json"

    @staticmethod
    def mlflow_marker(experiment: str) -> str:
        """Written once the MLflow experiment exists (one per experiment name)."""
        return f"{RESULTS}/mlflow_experiment/{re.sub(r'[^A-Za-z0-9_.-]', '_', experiment)}.json"

    @staticmethod
    def log(*parts: str) -> str:
        return "/".join((LOGS, *parts))

    @staticmethod
    def table(number: str, ext: str = "md") -> str:
        return f"{REPORTS}/table{number}.{ext}"

    results = RESULTS
    reports = REPORTS
    reports_readme = f"{REPORTS}/README.md"
    figures = f"{REPORTS}/figures"

    @staticmethod
    def claims(ext: str = "md") -> str:
        """The claims check (far.reports.claims): ``claims.md`` / ``claims.csv``."""
        return f"{REPORTS}/claims.{ext}"

    @staticmethod
    def data_check_report(ext: str = "md") -> str:
        """Every data check of the grid (far data check-report): ``data_check.md`` / ``.json``."""
        return f"{REPORTS}/data_check.{ext}"

    @staticmethod
    def gradcam(figure: str, seed: int | str, reports: str | Path = REPORTS) -> str:
        """Folder of one seed of GradCAM figure ``figure`` (6 or 7; ``far gradcam --out``);
        ``reports``: another reports folder. Outside ``reports/figures``, which is the report
        rule's own output."""
        return f"{reports}/gradcam/figure{figure}/s{seed}"

    @staticmethod
    def localisation(ext: str = "md") -> str:
        """The localisation table of Figures 6/7 (far.reports.gradcam): ``localisation.md`` / ``.csv`` / ``.html``."""
        return f"{REPORTS}/localisation.{ext}"


def project_root(params_file: str | Path) -> Path:
    """The nearest folder above ``params_file`` holding a ``Snakefile``, else its folder."""
    p = Path(params_file).resolve()
    for d in p.parents:
        if (d / "Snakefile").is_file():
            return d
    return p.parent


def load_params(path: str | Path) -> dict[str, Any]:
    """Read and validate a params file (params/default.yaml, params/paper.yaml).

    Checked against ``far/schemas/params.schema.yaml`` (JSON Schema); an error reads
    ``<file>: <dotted.field>: <problem>``. ``recipes_file`` (Table 1) is read in, from
    the project root, into ``recipes``. Cross-field problems are :class:`far.grid.Grid`'s.
    """
    import jsonschema
    import yaml

    params = read_yaml(path)
    schema = yaml.safe_load(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(field, f"{err.message} (checked against far/schemas/params.schema.yaml)", str(path))
    if "recipes" not in params and "recipes_file" in params:
        params["recipes"] = read_yaml(project_root(path) / params["recipes_file"])["recipes"]
    return params
