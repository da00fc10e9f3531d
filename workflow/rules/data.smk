# Datasets: synthetic generation (default) or the user's download (paper), then
# `far data prepare` -> data/prepared/<mode>/<dataset>/{train,val}.csv (+ classes.json, report.json).

PREPARED = LAYOUT.prepared("{dataset}")  # the lists, as Snakemake patterns


rule synth_dataset:
    """A synthetic dataset in the official SSv2/K400 layout (embedded default)."""
    output:
        directory(LAYOUT.synthetic_raw("{dataset}")),
    params:
        args=lambda w: synth_args(w.dataset),
    log:
        LAYOUT.log("data", "synth_{dataset}.log"),
    priority: 50  # the critical path: data -> pre-training -> fine-tunes
    threads: threads("synth_dataset")
    resources:
        **res("synth_dataset"),
    shell:
        ENV + keep_attempts(
            "far data synth --kind {wildcards.dataset} --out {output} {params.args} --quiet",
            LAYOUT.log("data", "synth_{wildcards.dataset}.attempts.log"),
        )


rule prepare_dataset:
    """Check the raw dataset and write the path-label lists. Real datasets are not an
    input of the DAG (they are downloaded by hand, see docs/data.md): a missing one stops
    the run before any job (onstart in common.smk)."""
    input:
        lambda w: [LAYOUT.synthetic_raw(w.dataset)] if w.dataset in SYNTH else [],
    # update(): Snakemake neither deletes the previous lists before the job nor keeps a
    # half-written set after a failure (it restores the previous ones).
    output:
        train=update(PREPARED.train),
        val=update(PREPARED.val),
        classes=update(PREPARED.classes),
        report=update(PREPARED.report),
    params:
        raw=lambda w: config["datasets"][w.dataset]["raw"],
        out=lambda w: LAYOUT.prepared(w.dataset).dir,
        args=lambda w: prepare_args(w.dataset),
    log:
        LAYOUT.log("data", "prepare_{dataset}.log"),
    priority: 50
    threads: threads("prepare_dataset")
    resources:
        **res("prepare_dataset"),
    shell:
        ENV + keep_attempts(
            "far data prepare --dataset {wildcards.dataset} --root {params.raw:q} --out {params.out} {params.args} --quiet",
            LAYOUT.log("data", "prepare_{wildcards.dataset}.attempts.log"),
        )


rule datasets:
    """Every prepared dataset of the grid (a target for DVC's `datasets` stage)."""
    input:
        expand(PREPARED.train, dataset=DATASETS),
