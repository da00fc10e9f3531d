# Datasets: synthetic generation (default) or the user's download (paper), then
# `far data prepare` -> data/prepared/<dataset>/{train,val}.csv (+ classes.json, report.json).

SYNTH = {d: config["datasets"][d]["synth"] for d in DATASETS if config["datasets"][d].get("synth")}
for _d in SYNTH:
    if config["datasets"][_d]["raw"] != f"data/raw/synthetic/{_d}":
        raise WorkflowError(f"{PARAMS_FILE}: datasets.{_d}.raw must be data/raw/synthetic/{_d} for a synthetic dataset")
PREPARED = "data/prepared/" + config["mode"] + "/{dataset}"  # = far.grid.prepared_dir
PREPARED_SH = "data/prepared/" + config["mode"] + "/{wildcards.dataset}"  # in shell commands (mode: schema enum)


def synth_args(dataset):
    s = SYNTH[dataset]
    flags = {"classes": "--classes", "videos_per_class_train": "--videos-per-class-train",
             "videos_per_class_val": "--videos-per-class-val", "size": "--size", "frames": "--frames",
             "fps": "--fps", "seed": "--seed"}
    return " ".join(f"{flags[k]} {shlex.quote(str(v))}" for k, v in s.items())


def prepare_args(dataset):
    p = config["datasets"][dataset].get("prepare", {})
    out = f"--workers {int(p.get('workers', 1))}"
    if p.get("reencode_short_side"):
        out += f" --reencode-short-side {int(p['reencode_short_side'])}"
    return out


rule synth_dataset:
    """A synthetic dataset in the official SSv2/K400 layout (embedded default)."""
    output:
        directory("data/raw/synthetic/{dataset}"),
    params:
        args=lambda w: synth_args(w.dataset),
    log:
        "logs/data/synth_{dataset}.log",
    priority: 50  # the critical path: data -> pre-training -> fine-tunes
    threads: threads("synth_dataset")
    resources:
        **res("synth_dataset"),
    shell:
        ENV + keep_attempts("far data synth --kind {wildcards.dataset} --out {output} {params.args} --quiet",
                            "logs/data/synth_{wildcards.dataset}.attempts.log")


rule prepare_dataset:
    """Check the raw dataset and write the path-label lists. Real datasets are not an
    input of the DAG (they are downloaded by hand, see docs/data.md): a missing one
    fails here with `far data prepare`'s message saying what is missing."""
    input:
        lambda w: [f"data/raw/synthetic/{w.dataset}"] if w.dataset in SYNTH else [],
    # update(): Snakemake neither deletes the previous lists before the job nor keeps a
    # half-written set after a failure (it restores the previous ones).
    output:
        train=update(PREPARED + "/train.csv"),
        val=update(PREPARED + "/val.csv"),
        classes=update(PREPARED + "/classes.json"),
        report=update(PREPARED + "/report.json"),
    params:
        raw=lambda w: config["datasets"][w.dataset]["raw"],
        args=lambda w: prepare_args(w.dataset),
    log:
        "logs/data/prepare_{dataset}.log",
    priority: 50
    threads: threads("prepare_dataset")
    resources:
        **res("prepare_dataset"),
    shell:
        ENV + keep_attempts("far data prepare --dataset {wildcards.dataset} --root {params.raw:q} --out " + PREPARED_SH
                            + " {params.args} --quiet", "logs/data/prepare_{wildcards.dataset}.attempts.log")


rule datasets:
    """Every prepared dataset of the grid (a target for DVC's `datasets` stage)."""
    input:
        expand(PREPARED + "/train.csv", dataset=DATASETS),
