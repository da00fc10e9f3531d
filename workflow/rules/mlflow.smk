# MLflow: the experiment is created once, before the jobs that log to it (MLFLOW_INIT in
# their inputs; `tracking.enabled: false` leaves this rule out).


if MLFLOW_ON:

    rule mlflow_experiment:
        output:
            MLFLOW_MARKER,
        params:
            uri=TRACKING.get("uri", "sqlite:///mlflow.db"),
            name=TRACKING.get("experiment", "far"),
        log:
            LAYOUT.log("mlflow_experiment.log"),
        priority: 50
        shell:
            '[ -n "${{MLFLOW_TRACKING_URI:-}}" ] || export MLFLOW_TRACKING_URI={params.uri:q}; '
            "(mlflow experiments get --experiment-name {params.name:q} >/dev/null 2>&1 "
            "|| mlflow experiments create --experiment-name {params.name:q}) > {log} 2>&1 "
            "&& mlflow experiments get --experiment-name {params.name:q} --output json > {output}"
