# Pre-trained checkpoints under data/checkpoints/: official ones fetched (paper) or
# pre-trained offline (default: VideoMAE, image MAE, then MVD from those two teachers).


rule pretrain:
    """Offline pre-training with `far pretrain`; resumable states stay in
    data/checkpoints/offline/<job>/checkpoints/ when a job fails (not an output)."""
    input:
        unpack(pretrain_inputs),
    output:
        LAYOUT.offline_checkpoint("{pretrain}"),
    params:
        config=lambda w: GRID.pretrain_config(w.pretrain),  # a changed setting reruns the job
        method=lambda w: parse_pretrain_name(w.pretrain)[0],
        teachers=teacher_flags,
        out=lambda w: LAYOUT.offline_dir(w.pretrain),
        pfile=PARAMS_FILE,
    log:
        LAYOUT.log("pretrain", "{pretrain}.log"),
    priority: 40
    threads: threads("pretrain")
    resources:
        **res("pretrain"),
    shell:
        ENV + keep_attempts(
            "far grid --params {params.pfile:q} pretrain-config {wildcards.pretrain} --out {params.out}/config.yaml"
            " && far pretrain --method {params.method} --config {params.out}/config.yaml --out {params.out}"
            " {params.teachers} --no-progress",
            LAYOUT.log("pretrain", "{wildcards.pretrain}.attempts.log"),
        )


rule fetch_checkpoint:
    """An official checkpoint, downloaded and verified by `far fetch` (paper mode)."""
    output:
        LAYOUT.fetched("{filename}"),
    params:
        name=lambda w: {v: k for k, v in FETCH.items()}[w.filename],
    log:
        LAYOUT.log("fetch", "{filename}.log"),
    wildcard_constraints:
        filename="|".join(map(re.escape, FETCH.values())) or "none",
    threads: 1
    resources:
        **res("fetch_checkpoint"),
    shell:
        "far fetch {params.name:q} --no-progress > {log} 2>&1"


rule checkpoints:
    """Every pre-trained checkpoint the fine-tunes start from (DVC's `checkpoints` stage)."""
    input:
        sorted({GRID.init_checkpoint(r) for r in GRID.runs.values()} - {None}),
