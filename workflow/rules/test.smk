# Multi-view test (2x3 views SSv2, 5x3 K400) of each fine-tuned model.


rule test:
    input:
        config=RUN.run_config,
        model=RUN.model,
        train=RUN.summary,  # the MLflow run the test logs into
    output:
        RUN.test_metrics,
        RUN.test_predictions,
    params:
        far=lambda w, resources: launch(resources.tasks),
    log:
        RUN.test_log,
    threads: threads("test")
    resources:
        **res("test"),
    shell:
        ENV + 'FAR="{params.far}"; ' + keep_attempts(
            'echo "launcher: $FAR"; $FAR test --config {input.config} --checkpoint {input.model} --out '
            + RUN_SH.test_dir + " --no-progress",
            RUN_SH.test_attempts,
        )
