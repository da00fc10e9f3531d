# Params: one file, validated before any job starts; the grid of runs from far/grid.py.
import json
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError

from far.config import ConfigError
from far.grid import Grid, parse_pretrain_name

# Exactly one params file: `--configfile` replaces params/default.yaml (Snakemake's own
# `configfile:` directive would deep-merge the two, mixing default and paper settings).
_given = [str(p) for p in workflow.config_settings.configfiles]
if len(_given) > 1:
    raise WorkflowError(f"give one params file with --configfile, got {len(_given)}: {_given}")
if workflow.config_settings.config:
    raise WorkflowError(
        "--config overrides are not supported: every job reads its settings from the params file "
        "(copy params/default.yaml, edit it, and pass it with --configfile)"
    )
PARAMS_FILE = os.path.relpath(_given[0]) if _given else "params/default.yaml"
# The params file through far's own loader (JSON Schema, then the grid's cross-field
# checks): errors read "<file>: <dotted.field>: <problem>".
try:
    GRID = Grid.from_file(PARAMS_FILE)
    if workflow.is_main_process:  # cluster jobs re-read the Snakefile: they skip this
        GRID.check_jobs()
except ConfigError as err:
    raise WorkflowError(str(err if err.source else err.in_file(PARAMS_FILE))) from None
config.clear()
config.update(GRID.params)
LAYOUT = GRID.layout  # every path (far/layout.py)
RUN = LAYOUT.run("{run}")  # a run folder's files, as Snakemake patterns
RUN_SH = LAYOUT.run("{wildcards.run}")  # ... and in shell commands


def _datasets_of(job):
    """The datasets whose videos a job reads (prepare, pre-training, fine-tune, test)."""
    w = job.wildcards
    if "dataset" in w.keys():
        return [w.dataset]
    if "run" in w.keys():
        return [GRID.runs[w.run].dataset]
    if "pretrain" in w.keys():
        return [parse_pretrain_name(w.pretrain)[1]]
    return []


# A downloaded dataset that is missing stops the run before any job starts (Snakemake
# would first delete the job's old prepared lists); a dry-run only warns, so that the
# paper grid can be listed without its data.
if workflow.is_main_process:
    for _msg in GRID.missing_raw(config["datasets"]):
        print(f"warning: {PARAMS_FILE}: {_msg}; a real run that needs it stops before any job", file=sys.stderr)


onstart:
    _needed = {d for job in workflow.dag.needrun_jobs() for d in _datasets_of(job)}
    _missing = GRID.missing_raw(_needed)
    if _missing:
        raise WorkflowError(f"{PARAMS_FILE}: " + "; ".join(_missing) + " (nothing was run or deleted)")
DATASETS = sorted({r.dataset for r in GRID.runs.values()} | {s for (_, s, _) in GRID.pretrain_jobs()})
RUN_IDS = list(GRID.runs)
PRETRAIN = GRID.pretrain_names()
FETCH = GRID.fetch_jobs()  # registry name -> file name
TABLES = [str(t) for t in config["tables"]]
REPORT_OUTPUTS = [LAYOUT.table(t) for t in TABLES] + [LAYOUT.reports_readme]

wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    figure="6|7",
    seed=r"\d+",
    run="|".join(map(re.escape, RUN_IDS)) or "none",
    pretrain="|".join(map(re.escape, PRETRAIN)) or "none",


def res(rule_name):
    """Resources of a rule: params `resources.default`, then `resources.<rule>`."""
    r = dict(config["resources"].get("default", {})) | dict(config["resources"].get(rule_name, {}))
    out = {"mem_mb": r.get("mem_mb", 2000), "runtime": r.get("runtime", 60), "tasks": r.get("tasks", 1)}
    if r.get("gpus", 0):
        out["gpu"] = r["gpus"]  # snakemake-executor-plugin-slurm: --gpus=N
        # The plugin asks for --ntasks-per-gpu=<tasks> unless told otherwise, i.e. tasks x
        # gpus processes; the fine-tunes want one process per GPU.
        out["tasks_per_gpu"] = max(1, out["tasks"] // r["gpus"])
    if r.get("cpus_per_task"):
        out["cpus_per_task"] = r["cpus_per_task"]
    if out["tasks"] > 1:
        # Tells the SLURM plugin not to wrap the job in `srun -n1`: the rule's own
        # launcher (launch() below) starts the tasks.
        out["mpi"] = "srun"
    return out


def threads(rule_name):
    r = dict(config["resources"].get("default", {})) | dict(config["resources"].get(rule_name, {}))
    return r.get("threads", 1)


def launch(tasks):
    """Shell prefix starting `tasks` processes of a far command: srun inside a SLURM
    allocation (each task reads SLURM_PROCID etc.), torchrun otherwise; nothing for 1."""
    if tasks <= 1:
        return "far"
    return (f'$(if [ -n "${{SLURM_JOB_ID:-}}" ]; then echo "srun --ntasks={tasks} far"; '
            f'else echo "torchrun --standalone --nproc-per-node={tasks} -m far.cli"; fi)')


# Every job: CPU torch/DeepSpeed without compiling ops, one BLAS thread per Snakemake
# thread, no telemetry.
# DeepSpeed's accelerator is CPU where there is no NVIDIA driver (unless set).
ENV = (
    "export DS_BUILD_OPS=0 OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
    "MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 PYTHONUNBUFFERED=1; "
    "[ -n \"${{DS_ACCELERATOR:-}}\" ] || command -v nvidia-smi >/dev/null || export DS_ACCELERATOR=cpu; "
)


def keep_attempts(command, history):
    """``command``'s output into the job's log (this attempt: Snakemake deletes a log
    before the job starts) and appended to ``history``, an undeclared file that keeps
    every attempt: a killed or failed attempt's log is what explains it."""
    header = 'echo "==== attempt started $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) ===="'
    return f"{{{{ {header}; {command}; }}}} 2>&1 | tee -a {history} > {{log}}"  # {{ }}: Snakemake's escape


def train_inputs(w):
    """What a fine-tune reads: its run config, the pre-trained checkpoint, the lists."""
    run = GRID.runs[w.run]
    lists = LAYOUT.prepared(run.dataset)
    # data_check.stop_before_training: the released models' checks of the dataset first.
    checks = [LAYOUT.run(c.run_id).data_check for c in GRID.stop_before_training(run.dataset)]
    init = GRID.init_checkpoint(run)  # None: from scratch
    return {"config": LAYOUT.run(w.run).run_config, "init": [init] if init else [],
            "train": lists.train, "val": lists.val, "mlflow": MLFLOW_INIT, "checks": checks}


def pretrain_inputs(w):
    """What an offline pre-training reads: its dataset's training list, MVD's teachers."""
    _, src, _ = parse_pretrain_name(w.pretrain)
    return {"data": LAYOUT.prepared(src).train, "mlflow": MLFLOW_INIT} | GRID.pretrain_teachers(w.pretrain)


def teacher_flags(w):
    t = GRID.pretrain_teachers(w.pretrain)
    return f"--teacher-video {shlex.quote(t['video'])} --teacher-image {shlex.quote(t['image'])}" if t else ""


def synth_args(dataset):
    """`far data synth` flags of a synthetic dataset (`datasets.<d>.synth`), quoted."""
    flags = {"classes": "--classes", "videos_per_class_train": "--videos-per-class-train",
             "videos_per_class_val": "--videos-per-class-val", "size": "--size", "frames": "--frames",
             "fps": "--fps", "seed": "--seed"}
    return " ".join(f"{flags[k]} {shlex.quote(str(v))}" for k, v in SYNTH[dataset].items())


def prepare_args(dataset):
    p = config["datasets"][dataset].get("prepare", {})
    out = f"--workers {int(p.get('workers', 1))}"
    if p.get("reencode_short_side"):
        out += f" --reencode-short-side {int(p['reencode_short_side'])}"
    return out


# MLflow: the store and experiment are created once, before the jobs that log to them
# (two jobs creating a fresh sqlite store at the same moment would race). `ancient`:
# the store changes with every run, which must not make the finished jobs stale.
TRACKING = dict(config.get("tracking", {}))
MLFLOW_ON = TRACKING.get("enabled", True)
MLFLOW_MARKER = LAYOUT.mlflow_marker(TRACKING.get("experiment", "far"))
MLFLOW_INIT = ancient(MLFLOW_MARKER) if MLFLOW_ON else []
SYNTH = {d: config["datasets"][d]["synth"] for d in DATASETS if config["datasets"][d].get("synth")}


# Figures 6/7 (far/reports/gradcam.py): one `far gradcam` job per figure x seed.
from far.reports.gradcam import FIGURES, figure_jobs, figure_runs

GRADCAM_JOBS = figure_jobs(GRID)  # [(figure, seed)]; none when the params list neither Table 7 nor 8
GRADCAM_DIRS = [LAYOUT.gradcam(f, s) for f, s in GRADCAM_JOBS]


def gradcam_inputs(w):
    """What `far gradcam` reads: both runs' run config, weights and per-video test results
    (the choice of videos), the val list and class names, and a synthetic dataset's raw
    folder (its videos and the object masks the score needs)."""
    runs = figure_runs(GRID, FIGURES[w.figure], int(w.seed))
    files = [LAYOUT.run(r.run_id) for r in runs]
    dataset = runs[0].dataset
    lists = LAYOUT.prepared(dataset)
    return {"configs": [f.run_config for f in files], "models": [f.model for f in files],
            "predictions": [f.test_predictions for f in files], "val": lists.val, "classes": lists.classes,
            "raw": [LAYOUT.synthetic_raw(dataset)] if dataset in SYNTH else []}


# The data checks (workflow/rules/data_check.smk, far/grid.py DataCheck).
CHECKS = GRID.data_checks  # registry name -> far.grid.DataCheck
CHECK_IDS = {c.run_id: c for c in CHECKS.values()}  # its folder under results/runs/


def stand_in_inputs(w):
    run = LAYOUT.run(CHECKS[w.stand_in].stand_in)
    return {"model": run.model, "metrics": run.test_metrics, "config": run.run_config}


def data_check_inputs(w):
    """The prepared list and its report, the registry and the model's file."""
    c = CHECK_IDS[w.check]
    lists = LAYOUT.prepared(c.dataset)
    return {"val": lists.val, "report": lists.report, "registry": c.registry, "checkpoint": c.checkpoint}


def data_check_flags(w):
    """far data check's arguments for one model (far/grid.py), every value quoted."""
    return " ".join(shlex.quote(a) for a in GRID.data_check_args(CHECK_IDS[w.check]))
