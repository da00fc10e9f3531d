"""Does the default pipeline's offline pre-training beat random initialisation? (issue 5)

Fine-tunes the Table-7 "FAR ViT-S" cell of the embedded default on synthetic-ssv2 (the
temporal-pair classes; ``--dataset k400``: the Table-8 cell on synthetic-k400) from scratch and from each ViT-S pre-training the default grid
produces (``far pretrain`` VideoMAE on ssv2 and on k400, MVD on k400), over several
seeds, through the real CLI (``far train`` with a 2 x 3-view test at the end), and
writes a table, a JSON of every number and a plot of the validation curves.

The pre-trained checkpoints are the pipeline's own: ``snakemake`` builds them (and the
synthetic data) first, so their wall times are those of the default pipeline's jobs.

    python benchmarks/pretraining_gain.py --epochs 40 --seeds 0 1 2 --jobs 2

Only the fine-tuning length and its regularisers differ from the pipeline's recipe:
``--epochs`` epochs instead of the default's 2, and no Mixup/CutMix/RandAugment/erasing
(``--recipe-aug`` keeps them): those regularisers suit 30-50 epochs over 169k videos;
over 800 steps on 160 videos they keep every initialisation at chance.
Results: benchmarks/results/pretraining_gain.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The grid run whose recipe and model are fine-tuned, per dataset (Table 7 SSv2, Table 8 K400).
CELL_ROWS = {"ssv2": "T7 FAR (MVD) ViT-S", "k400": "T8 FAR (MVD) ViT-S"}


def base_run(params: str, dataset: str = "ssv2") -> tuple[dict, dict]:
    """The default grid's FAR ViT-S run config (seed 0) on ``dataset`` and the ViT-S
    pre-trainings the grid builds (name -> checkpoint path)."""
    from far.grid import Grid, pretrain_name

    grid = Grid.from_file(params)
    for rid, run in grid.runs.items():
        cfg = grid.run_config(rid)
        if run.dataset == dataset and run.seed == 0 and CELL_ROWS[dataset] in cfg["tracking"]["tags"]["rows"]:
            inits = {}
            for method in ("videomae", "mvd"):
                for source in ("ssv2", "k400"):
                    name = pretrain_name(method, source, run.backbone)
                    if name in grid.pretrain_names():
                        inits[name] = grid.layout.offline_checkpoint(name)
            return cfg, inits
    raise SystemExit(f"no {dataset} run with rows {CELL_ROWS[dataset]!r} in {params}")


def arm_config(base: dict, init: str | None, seed: int, epochs: int, recipe_aug: bool, val_every: int) -> dict:
    cfg = json.loads(json.dumps(base))
    cfg["init"] = init
    cfg["seed"] = seed
    cfg["optim"]["epochs"] = epochs
    cfg["optim"]["warmup_epochs"] = max(1, epochs // 10)
    cfg["test"] = {"clips": 2, "crops": 3, "run_at_end": True, "val_every": val_every}
    cfg["checkpoint"] = {"keep_last": 1, "every_epochs": val_every}
    cfg["tracking"]["enabled"] = False
    cfg["log"] = {"every_steps": 20, "progress_bar": "off"}
    if not recipe_aug:
        cfg["augment"] |= {"mixup": 0.0, "cutmix": 0.0}
        cfg["data"] |= {"randaug_num_ops": 0, "reprob": 0.0}
    return cfg


def run_one(job: dict) -> dict:
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.yaml").write_text(yaml.safe_dump(job["config"], sort_keys=False))
    env = os.environ | {"DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    with open(out / "train.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "far.cli", "train", "--config", str(out / "run.yaml"),
                             "--out", str(out / "run"), "--no-progress"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"far train failed ({rc}): see {out / 'train.log'}")
    summary = json.loads((out / "run" / "train.json").read_text())
    with open(out / "run" / "history.csv") as f:
        curve = [(int(r["step"]), float(r["val_top1"])) for r in csv.DictReader(f) if r["val_top1"]]
    return {"arm": job["arm"], "seed": job["seed"], "test_top1": summary["test"]["top1"],
            "test_top5": summary["test"]["top5"], "test_videos": summary["test"]["videos"],
            "final_train_loss": summary["train_loss"], "steps": summary["steps"], "val_curve": curve,
            "wall_s": time.perf_counter() - t0}


def pretrain_times(inits: dict) -> dict:
    out = {}
    for name, ckpt in inits.items():
        metrics = ROOT / Path(ckpt).parent / "metrics.json"
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            out[name] = {"wall_s": m["wall_s"], "steps": m["steps"], "first_step_loss": m["first_step_loss"],
                         "last_epoch_loss": m["epoch_loss"][-1]}
    return out


def write_results(res: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2))
    arms = list(dict.fromkeys(r["arm"] for r in res["runs"]))
    lines = [f"# Pre-training vs random initialisation on synthetic-{res['dataset']} (`benchmarks/pretraining_gain.py`)", "",
             f"Date {res['date']}. Machine: {res['machine']}. Command: `{res['command']}`.", "",
             f"Fine-tuned: the default grid's `{res['cell']}` cell, {res['steps']} steps of batch "
             f"{res['batch']}, test {res['test_views']} views on {res['test_videos']} val videos "
             f"({res['classes']}). Augmentation: {res['augmentation']}.", "",
             "| initialisation | test top-1 mean ± sd | per seed | final train loss (mean) |", "|---|---|---|---|"]
    for arm in arms:
        rows = [r for r in res["runs"] if r["arm"] == arm]
        acc = [r["test_top1"] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        lines.append(f"| {arm} | {statistics.mean(acc):.1f} ± {sd:.1f} % | "
                     + ", ".join(f"{a:.1f}" for a in acc)
                     + f" | {statistics.mean(r['final_train_loss'] for r in rows):.3f} |")
    if res["pretraining"]:
        total = sum(p["wall_s"] for p in res["pretraining"].values())
        lines += ["", "Pre-training jobs used (as the default pipeline ran them; `far pretrain` wall time, 1 thread each):", "",
                  "| job | steps | loss first step → last epoch | wall |", "|---|---|---|---|"]
        for name, p in res["pretraining"].items():
            lines.append(f"| {name} | {p['steps']} | {p['first_step_loss']:.4f} → {p['last_epoch_loss']:.4f} | {p['wall_s']:.1f} s |")
        lines.append(f"| total (these {len(res['pretraining'])}) | | | {total:.1f} s |")
    lines += ["", f"![validation curves]({stem.name}.png)", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    plot(res, stem.with_suffix(".png"))


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in dict.fromkeys(r["arm"] for r in res["runs"]):
        curves = [r["val_curve"] for r in res["runs"] if r["arm"] == arm]
        steps = [s for s, _ in curves[0]]
        vals = [[c[i][1] for c in curves] for i in range(len(steps))]
        mean = [statistics.mean(v) for v in vals]
        ax.plot(steps, mean, marker="o", label=arm)
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.15)
    ax.axhline(25, color="grey", ls=":", label="chance")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("val top-1 (%), mean and range over seeds")
    ax.set_title(f"synthetic-{res['dataset']}, FAR ViT-S (vit_tiny_cpu)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params/default.yaml")
    ap.add_argument("--dataset", default="ssv2", choices=sorted(CELL_ROWS))
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--val-every", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="fine-tunes run at once (1 thread each)")
    ap.add_argument("--recipe-aug", action="store_true", help="keep the recipe's Mixup/CutMix/RandAugment/erasing")
    ap.add_argument("--no-snakemake", action="store_true", help="the checkpoints and data exist already")
    ap.add_argument("--workdir", default="results/pretraining_gain")
    ap.add_argument("--out", default=None, help="results stem (default benchmarks/results/pretraining_gain[_k400])")
    args = ap.parse_args(argv)
    os.chdir(ROOT)

    out = args.out or "benchmarks/results/pretraining_gain" + ("" if args.dataset == "ssv2" else f"_{args.dataset}")
    base, inits = base_run(args.params, args.dataset)
    if not args.no_snakemake:  # the pipeline's own data and pre-training jobs
        subprocess.run(["snakemake", base["data"]["train_list"], *inits.values(), "--cores", str(args.jobs),
                        "--configfile", args.params], check=True)
    jobs = []
    for arm, init in [("random init (scratch)", None)] + list(inits.items()):
        for seed in args.seeds:
            slug = "scratch" if init is None else arm
            jobs.append({"arm": arm, "seed": seed, "out": f"{args.workdir}/{args.dataset}/{slug}-s{seed}",
                         "config": arm_config(base, init, seed, args.epochs, args.recipe_aug, args.val_every)})
    runs = []
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for i, r in enumerate(pool.map(run_one, jobs), 1):
            runs.append(r)
            print(f"[{i}/{len(jobs)}] {r['arm']} seed {r['seed']}: test top-1 {r['test_top1']:.1f} % "
                  f"({r['wall_s']:.0f} s; {time.perf_counter() - t0:.0f} s elapsed)", flush=True)
    import torch

    batch = base["batch"]["total"]
    res = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{args.jobs} fine-tunes at once, 1 thread each",
        "command": "python benchmarks/pretraining_gain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "dataset": args.dataset, "cell": CELL_ROWS[args.dataset],
        "classes": ("4 classes = 2 pairs that differ only in time order, chance 25 %" if args.dataset == "ssv2"
                    else "4 appearance + motion classes, chance 25 %"),
        "steps": runs[0]["steps"], "batch": batch, "test_views": "2 x 3", "test_videos": runs[0]["test_videos"],
        "augmentation": ("the recipe's (Mixup, CutMix, RandAugment, erasing)" if args.recipe_aug else
                         "none but the random resized crop (no Mixup/CutMix/RandAugment/erasing); label smoothing 0.1"),
        "pretraining": pretrain_times(inits), "runs": runs,
    }
    write_results(res, Path(out))
    print(Path(out).with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
