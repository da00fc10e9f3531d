# Multi-view test (2x3 views SSv2, 5x3 K400) of each fine-tuned model.


rule test:
    input:
        train=RUN_DIR + "/train.json",
    output:
        RUN_DIR + "/test/metrics.json",
    params:
        far=lambda w, resources: launch(resources.tasks),
    log:
        RUN_DIR + "/test.log",
    threads: threads("test")
    resources:
        **res("test"),
    shell:
        ENV + 'FAR="{params.far}"; ' + keep_attempts(
            'echo "launcher: $FAR"; $FAR test --config ' + RUN_SH + "/run.yaml --checkpoint " + RUN_SH
            + "/model.pth --out " + RUN_SH + "/test --no-progress",
            RUN_SH + "/test.attempts.log")
