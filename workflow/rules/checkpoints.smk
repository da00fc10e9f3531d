# Pre-trained checkpoints under data/checkpoints/: official ones fetched (paper) or
# pre-trained offline (default: VideoMAE, image MAE, then MVD from those two teachers).

PRETRAIN_OUT = "data/checkpoints/offline/{pretrain}"
PRETRAIN_DIR = "data/checkpoints/offline/{wildcards.pretrain}"  # in shell commands


def pretrain_inputs(w):
    method, src, _ = parse_pretrain_name(w.pretrain)
    return {"data": GRID.dataset_paths(src)["prepared"] + "/train.csv", "mlflow": MLFLOW_INIT} | GRID.pretrain_teachers(w.pretrain)


def teacher_flags(w):
    t = GRID.pretrain_teachers(w.pretrain)
    return f"--teacher-video {shlex.quote(t['video'])} --teacher-image {shlex.quote(t['image'])}" if t else ""


rule pretrain:
    """Offline pre-training with `far pretrain`; resumable states stay in
    data/checkpoints/offline/<job>/checkpoints/ when a job fails (not an output)."""
    input:
        unpack(pretrain_inputs),
    output:
        PRETRAIN_OUT + "/checkpoint.pth",
    params:
        config=lambda w: GRID.pretrain_config(w.pretrain),  # a changed setting reruns the job
        method=lambda w: parse_pretrain_name(w.pretrain)[0],
        teachers=teacher_flags,
    log:
        "logs/pretrain/{pretrain}.log",
    priority: 40
    threads: threads("pretrain")
    resources:
        **res("pretrain"),
    shell:
        ENV + keep_attempts(
            "far grid --params " + PARAMS_ARG + " pretrain-config {wildcards.pretrain} --out " + PRETRAIN_DIR
            + "/config.yaml && far pretrain --method {params.method} --config " + PRETRAIN_DIR + "/config.yaml --out "
            + PRETRAIN_DIR + " {params.teachers} --no-progress",
            "logs/pretrain/{wildcards.pretrain}.attempts.log")


rule fetch_checkpoint:
    """An official checkpoint, downloaded and verified by `far fetch` (paper mode)."""
    output:
        "data/checkpoints/{filename}",
    params:
        name=lambda w: {v: k for k, v in FETCH.items()}[w.filename],
    log:
        "logs/fetch/{filename}.log",
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
        sorted({GRID.init_checkpoint(r) for r in GRID.runs.values()}),
