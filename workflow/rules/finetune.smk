# Fine-tuning: one job per unique run of the grid (far/grid.py), shared by every table
# row that needs it. `far train` writes RUN/train.json LAST: it is the rule's output.
# RUN/checkpoints/ (resumable states) is deliberately NOT an output, so Snakemake never
# deletes it: a failed or killed job resumes from its last state when rerun.

RUN_DIR = RESULTS + "/runs/{run}"
RUN_SH = RESULTS + "/runs/{wildcards.run}"  # in shell commands


def train_inputs(w):
    run = GRID.runs[w.run]
    prepared = GRID.dataset_paths(run.dataset)["prepared"]
    return {"init": GRID.init_checkpoint(run), "train": f"{prepared}/train.csv", "val": f"{prepared}/val.csv",
            "mlflow": MLFLOW_INIT}


rule train:
    input:
        unpack(train_inputs),
    output:
        RUN_DIR + "/train.json",
    params:
        config=lambda w: GRID.run_config(w.run),  # a changed setting reruns the run
        far=lambda w, resources: launch(resources.tasks),
    log:
        RUN_DIR + "/train.log",
    threads: threads("train")
    resources:
        **res("train"),
    shell:
        ENV + 'FAR="{params.far}"; ' + keep_attempts(
            'echo "launcher: $FAR"; far grid --params ' + PARAMS_ARG + " run-config {wildcards.run} --out "
            + RUN_SH + "/run.yaml && $FAR train --config " + RUN_SH + "/run.yaml --out " + RUN_SH + " --no-progress",
            RUN_SH + "/train.attempts.log")
