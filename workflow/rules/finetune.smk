# Fine-tuning: one job per unique run of the grid (far/grid.py), shared by every table
# row that needs it. `run_config` writes RUN/run.yaml once (a changed setting reruns it,
# and with it the run); `far train` writes RUN/train.json LAST. RUN/checkpoints/
# (resumable states) is deliberately NOT an output, so Snakemake never deletes it: a
# failed or killed job resumes from its last state when rerun.


rule run_config:
    output:
        RUN.run_config,
    params:
        config=lambda w: GRID.run_config(w.run),  # a changed setting reruns the run
        pfile=PARAMS_FILE,
    log:
        LAYOUT.log("run_config", "{run}.log"),
    threads: 1
    resources:
        **res("run_config"),
    shell:
        "far grid --params {params.pfile:q} run-config {wildcards.run} --out {output} > {log} 2>&1"


rule train:
    input:
        unpack(train_inputs),
    output:
        summary=RUN.summary,
        model=RUN.model,
        history=RUN.history,  # rewritten from the checkpointed state on resume
        steps=RUN.steps,
    params:
        far=lambda w, resources: launch(resources.tasks),
    log:
        RUN.train_log,
    threads: threads("train")
    resources:
        **res("train"),
    shell:
        ENV + 'FAR="{params.far}"; ' + keep_attempts(
            'echo "launcher: $FAR"; $FAR train --config {input.config} --out ' + RUN_SH.dir + " --no-progress",
            RUN_SH.train_attempts,
        )
