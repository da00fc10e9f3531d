# The FAR pipeline: data -> pre-trained checkpoints -> fine-tuning -> multi-view test
# -> FLOP counting -> reports/. Every setting comes from one params file:
#
#   snakemake --cores 2                                    # params/default.yaml (embedded, CPU)
#   snakemake --configfile params/paper.yaml --profile workflow/profiles/slurm
#
# Rules are thin: each calls the `far` CLI; the grid (which runs exist, their configs)
# is far/grid.py. See docs/pipeline.md.
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/mlflow.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/checkpoints.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/test.smk"
include: "workflow/rules/data_check.smk"
include: "workflow/rules/complexity.smk"
include: "workflow/rules/gradcam.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/dvc.smk"


# Every stage's outputs are listed, not only the reports: Snakemake does not rerun a job
# for a missing intermediate file when the final outputs are up to date, so naming them
# here makes "delete a run's train.json (or its folder)" rerun that run, its test and
# the report, and nothing else.
rule all:
    input:
        REPORT_OUTPUTS,
        GRADCAM_DIRS,
        expand(RUN.summary, run=RUN_IDS),
        expand(RUN.test_metrics, run=RUN_IDS),
        DVC_DATA,
        LAYOUT.complexity,
        LAYOUT.dvc_status,
        [LAYOUT.data_check_report()] if CHECKS else [],
    default_target: True
