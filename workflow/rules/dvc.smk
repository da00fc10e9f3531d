# DVC versions the data (dvc.yaml: datasets, checkpoints); Snakemake owns execution.
# After the data exist, this records their hashes in dvc.lock (`dvc commit`) so that
# `dvc status` is clean and `dvc push` can store them; its output is that status.

DVC_DATA = [p for d in DATASETS for p in (LAYOUT.prepared(d).train, LAYOUT.prepared(d).val, LAYOUT.prepared(d).report)]
DVC_DATA += sorted({GRID.init_checkpoint(r) for r in GRID.runs.values()} - {None})
DVC_DATA += sorted(c.checkpoint for c in CHECKS.values() if not c.stand_in)  # released models, fetched


rule dvc_commit:
    input:
        DVC_DATA,
    output:
        LAYOUT.dvc_status,
    log:
        LAYOUT.log("dvc_commit.log"),
    threads: 1
    resources:
        **res("dvc_commit"),
    shell:
        "export DVC_NO_ANALYTICS=1; dvc commit --force datasets checkpoints > {log} 2>&1 "
        "&& dvc status --json datasets checkpoints > {output} 2>> {log} "
        "&& grep -qx '{{}}' {output}"
