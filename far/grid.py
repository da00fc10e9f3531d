"""The experiment grid: from a pipeline params file to the set of unique jobs.

``params/default.yaml`` / ``params/paper.yaml`` say which tables to regenerate, on
which datasets, with which pre-training, backbones, recipes and seeds. This module
expands that into:

- fine-tuning runs, one per unique (dataset, pre-training, model config, seed) —
  identical configurations are one job, shared by every table row that needs them;
- pre-training jobs (offline mode) or checkpoints to fetch (paper mode);
- for each run, the fully resolved run config that ``far train`` reads.

It is imported by the Snakefile (no torch import here) and by the reports. Paths come
from :mod:`far.layout`; a params file is read and validated by
:func:`far.layout.load_params` (:meth:`Grid.from_file`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from far.config import ConfigError
from far.layout import Layout, load_params, project_root
from far.tables import DEFAULT_TABLES, Table, load_tables

PAPER_BACKBONES = ("vit_s", "vit_b")
# The GPU-hour estimate (docs/pipeline.md): training videos of the official copies and an
# assumed sustained bf16 throughput per GPU (about a quarter of an A5000's dense peak).
PAPER_TRAIN_VIDEOS = {"ssv2": 168_913, "k400": 240_436}
ASSUMED_TFLOPS = 30.0


@dataclass
class Run:
    """One fine-tuning job."""

    run_id: str
    dataset: str
    pretraining: str
    backbone: str  # the paper's size name (vit_s / vit_b); the model may map it to a CPU size
    model: dict[str, Any]
    seed: int
    rows: list[tuple[str, str]] = field(default_factory=list)  # (table, row) it serves
    released: str | None = None  # not trained: the released model ``released`` tested by far data check
    gflops: float | None = None  # the paper's forward GFLOPs of its rows (the GPU-hour estimate)


@dataclass
class Cell:
    """A table cell: one row of one table, averaged over the seeds' runs."""

    table: str
    row: str
    run_ids: list[str]
    paper: dict[str, float]
    released: str | None = None  # from a released model's test (data_check.baselines_from_released)


@dataclass(frozen=True)
class DataCheck:
    """One ``far data check`` job: a released fine-tuned model (a registry entry) tested on a
    dataset's prepared validation list. A *stand-in* (the default: nothing is released for
    synthetic data) is a fine-tune of this grid exported as if released (``far data stand-in``)."""

    name: str  # registry name
    dataset: str
    backbone: str  # the paper's size name
    registry: str  # the registry file that has ``name``
    dest: str  # where far data check fetches it to
    checkpoint: str  # the file the job reads: the fetched release, or the stand-in's export
    stand_in: str | None = None  # the run exported as the model
    known_sizes: tuple[int, ...] = ()  # validation-set sizes to accept (synthetic data), else the known copies'

    @property
    def run_id(self) -> str:
        """Its folder under results/runs/: test/ and data_check.json."""
        return released_run_id(self.name)


def released_run_id(name: str) -> str:
    """The results/runs/ folder of released model ``name``'s data check."""
    return f"released-{name}"


def _slug(model: Mapping[str, Any]) -> str:
    blob = json.dumps(model, sort_keys=True, default=list).encode()
    return hashlib.sha1(blob).hexdigest()[:8]


def _variant_name(model: Mapping[str, Any]) -> str:
    v = model.get("variant")
    if v and set(model) <= {"variant", "backbone", "num_classes", "pos_embed"}:
        return v
    return "v" + _slug(model)


def display_name(run: Run) -> str:
    """A run's name for people (MLflow's run name): the table rows it serves and its seed,
    e.g. ``T2 Global; T7 MVD ViT-S · s0``. The folder name stays ``run.run_id`` (an MLflow
    tag, ``far.run_id``)."""
    rows = "; ".join(f"T{t} {r}" for t, r in run.rows) or run.run_id
    return f"{rows} · s{run.seed}"


def recipe_overrides(params: Mapping[str, Any], dataset: str, backbone: str | None = None) -> dict[str, dict[str, Any]]:
    """``recipe_overrides`` of a params file for one dataset (and paper backbone): the
    sections that apply to every run, then that dataset's own
    (``recipe_overrides.datasets.<dataset>``), then that dataset's for the backbone
    (``...datasets.<dataset>.backbones.<backbone>``), each on top key by key. The default
    shortens Table 1 differently per dataset (and per backbone on SSv2) this way."""
    overrides = dict(params.get("recipe_overrides") or {})
    per_dataset = dict((overrides.pop("datasets", None) or {}).get(dataset, {}))
    per_backbone = (per_dataset.pop("backbones", None) or {}).get(backbone, {}) if backbone else {}
    merged = {section: dict(values) for section, values in overrides.items()}
    for layer in (per_dataset, per_backbone):
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


class Grid:
    """The expanded grid of one params file."""

    def __init__(self, params: Mapping[str, Any], tables_path: str | Path = DEFAULT_TABLES, *, root: str | Path = "."):
        """``params``: a params mapping (validated: :func:`far.layout.load_params`);
        ``root``: the project root its relative paths are relative to."""
        self.params = dict(params)
        self.root = Path(root)
        self.layout = Layout(self.params["mode"])
        if "recipes" not in self.params and "recipes_file" in self.params:
            # Table 1 lives in its own file (params/recipes.yaml), shared by both modes.
            self.params["recipes"] = yaml.safe_load((self.root / self.params["recipes_file"]).read_text())["recipes"]
        for d, ds in self.params["datasets"].items():
            if ds.get("synth") and ds.get("raw", self.layout.synthetic_raw(d)) != self.layout.synthetic_raw(d):
                raise ConfigError(f"datasets.{d}.raw", f"must be {self.layout.synthetic_raw(d)} for a synthetic dataset")
        for d, sections in ((self.params.get("recipe_overrides") or {}).get("datasets") or {}).items():
            if d not in self.params["datasets"]:
                raise ConfigError(f"recipe_overrides.datasets.{d}",
                                  f"not a dataset of this params file ({', '.join(self.params['datasets'])})")
            for bb in (sections or {}).get("backbones") or {}:
                if bb not in self.params["backbones"]:
                    raise ConfigError(f"recipe_overrides.datasets.{d}.backbones.{bb}",
                                      f"not a backbone of this params file ({', '.join(self.params['backbones'])})")
        self.tables: dict[str, Table] = load_tables(tables_path)
        self.runs: dict[str, Run] = {}
        self._ids: dict[tuple, str] = {}
        self.cells: list[Cell] = []
        # Released models' checks first: with baselines_from_released they replace runs.
        self.data_checks: dict[str, DataCheck] = self._released_checks()
        self.released_runs: dict[str, Run] = {}  # run_id (released-<name>) -> the cells' pseudo-run
        self._replaced: dict[str, Run] = {}  # runs a released model's test stands for
        for number in [str(t) for t in self.params["tables"]]:
            if number == "1":  # Table 1 is the recipe: written from params, no runs
                continue
            self._expand_table(self.tables[number])
        for check in self._stand_in_checks():
            self.data_checks[check.name] = check

    @classmethod
    def from_file(cls, path: str | Path, tables_path: str | Path = DEFAULT_TABLES) -> "Grid":
        """The grid of a params file, validated, its paths relative to its project root.
        Cross-field problems (a registry name that does not exist, ...) are ConfigErrors too."""
        params = load_params(path)
        try:
            return cls(params, tables_path, root=project_root(path))
        except (KeyError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise err.in_file(path) from None
            raise ConfigError("", str(err), str(path)) from None

    def check_jobs(self) -> None:
        """Every run config and pre-training config through the validators of ``far train``
        and ``far pretrain``: a bad setting is refused before any job starts. The error's
        field names the job (``run <id>: optim.layer_decay``)."""
        from far.engine.config import run_config
        from far.pretrain.config import config_from_dict

        jobs = [(f"run {r}", run_config, self.run_config, r) for r in self.runs]
        jobs += [(f"pre-training {p}", config_from_dict, self.pretrain_config, p) for p in self.pretrain_names()]
        for label, build, values, name in jobs:
            try:
                build(values(name))
            except ConfigError as err:
                raise ConfigError(label, str(err)) from None

    def cell(self, table: str, row: str) -> Cell:
        """The cell of ``row`` in table ``table`` (its runs, one per seed); a KeyError naming
        both when the params do not list that table or the table has no such row."""
        for c in self.cells:
            if (c.table, c.row) == (str(table), row):
                return c
        raise KeyError(f"no cell {row!r} of table {table} in this grid (tables: {', '.join(map(str, self.params['tables']))})")

    # ---- expansion -------------------------------------------------------------
    def _expand_table(self, table: Table) -> None:
        ab = self.params["ablation"]
        for row in table.rows:
            if table.kind == "ablation":
                dataset, pretraining = ab["dataset"], ab["pretraining"]
            else:
                dataset, pretraining = table.dataset, row.pretraining
            if not row.in_paper and pretraining not in self.params["pretraining"]:
                continue  # a supplementary row whose pre-training these params do not configure
            paper_backbone = row.model["backbone"]
            model = {k: v for k, v in row.model.items() if k not in ("num_classes", "backbone")}
            model = self.backbone_spec(paper_backbone) | model
            model["num_classes"] = self.params["datasets"][dataset]["num_classes"]
            model |= self.params.get("model_overrides", {})
            model = self._canonical(model)
            released = self._released_baseline(table, row, dataset, paper_backbone)
            ids = []
            for seed in self.params["seeds"]:
                # One job per resolved configuration: the key ignores how the row spelled it
                # (T2 "Global" and T7 "MVD ViT-S" are the same model); the id keeps the
                # first row's name for readability.
                key = (dataset, pretraining, paper_backbone, _slug(model), int(seed))
                run_id = self._ids.setdefault(
                    key, f"{dataset}-{pretraining}-{paper_backbone}-{_variant_name(row.model)}-{_slug(model)}-s{seed}")
                runs = self._replaced if released else self.runs
                run = runs.setdefault(run_id, Run(run_id, dataset, pretraining, paper_backbone, model, int(seed),
                                                  gflops=row.paper.get("gflops")))
                run.rows.append((table.number, row.row))
                ids.append(run_id)
            if released:
                # One test of the released model serves every seed of the cell.
                run = self.released_runs.setdefault(released.run_id, Run(
                    released.run_id, dataset, pretraining, paper_backbone, model, -1, released=released.name,
                    gflops=row.paper.get("gflops")))
                run.rows.append((table.number, row.row))
                ids = [released.run_id]
            self.cells.append(Cell(table.number, row.row, ids, row.paper, released=released.name if released else None))

    # ---- data checks ---------------------------------------------------------------
    def _data_check_settings(self) -> dict[str, Any]:
        return dict(self.params.get("data_check") or {})

    def _known_sizes(self, dataset: str) -> tuple[int, ...]:
        """A synthetic dataset's own validation-set size (the known copies' are the real datasets')."""
        synth = self.params["datasets"][dataset].get("synth")
        return (int(synth["classes"]) * int(synth["videos_per_class_val"]),) if synth else ()

    def _released_checks(self) -> dict[str, DataCheck]:
        """``data_check.released``: each a fine-tuned registry entry of that dataset."""
        registry_path = self.params.get("checkpoints_registry", "params/checkpoints.yaml")
        out = {}
        for dataset, names in (self._data_check_settings().get("released") or {}).items():
            if dataset not in self.params["datasets"]:
                raise ConfigError(f"data_check.released.{dataset}",
                                  f"not a dataset of this params file ({', '.join(self.params['datasets'])})")
            for i, name in enumerate(names):
                where = f"data_check.released.{dataset}[{i}]"
                spec = self.registry().get(name)
                if spec is None:
                    raise ConfigError(where, f"{name!r} is not in the checkpoint registry {registry_path}")
                if spec.kind != "finetuned" or spec.published is None:
                    raise ConfigError(where, f"{name!r} is a {spec.kind} checkpoint, not a released fine-tuned model")
                if spec.published.dataset != dataset:
                    raise ConfigError(where, f"{name!r} was fine-tuned on {spec.published.dataset}, not {dataset}")
                out[name] = DataCheck(name, dataset, spec.backbone, registry_path, self.layout.checkpoints,
                                      self.layout.fetched(spec.filename), known_sizes=self._known_sizes(dataset))
        return out

    def _released_baseline(self, table: Table, row: Any, dataset: str, backbone: str) -> DataCheck | None:
        """The released model that fills this cell (``data_check.baselines_from_released``:
        Tables 7/8's VideoMAE baselines; the first one listed of that dataset and backbone),
        or None."""
        if not (self._data_check_settings().get("baselines_from_released") and table.kind != "ablation"
                and row.pretraining == "videomae" and row.model.get("variant") == "baseline"):
            return None
        for check in self.data_checks.values():
            if (check.dataset, check.backbone) == (dataset, backbone):
                return check
        raise ConfigError("data_check.baselines_from_released",
                          f"Table {table.number} {row.row!r} needs a released {backbone} model of {dataset} "
                          f"in data_check.released.{dataset}")

    def _stand_in_checks(self) -> list[DataCheck]:
        """``data_check.stand_ins``: the first seed's run of each cell, exported as a release
        (those of the tables the params list)."""
        out = []
        for i, ref in enumerate(self._data_check_settings().get("stand_ins") or []):
            if ref["table"] not in [str(t) for t in self.params["tables"]]:
                continue
            try:
                cell = self.cell(ref["table"], ref["row"])
            except KeyError as err:
                raise ConfigError(f"data_check.stand_ins[{i}]", str(err.args[0])) from None
            if cell.released:
                raise ConfigError(f"data_check.stand_ins[{i}]", "that cell is filled from a released model")
            run = self.runs[cell.run_ids[0]]
            name = f"stand_in_{run.dataset}_{run.pretraining}_{run.backbone}"
            files = self.layout.run(run.run_id)
            out.append(DataCheck(name, run.dataset, run.backbone, files.release(name, "yaml"),
                                 self.layout.run(released_run_id(name)).dir, files.release(name, "pth"),
                                 stand_in=run.run_id, known_sizes=self._known_sizes(run.dataset)))
        return out

    def data_check_args(self, check: DataCheck) -> list[str]:
        """``far data check``'s arguments for one check (the rule quotes them): the dataset's
        data settings and the params' backbone, the params' thresholds and test batch where
        set (else the command's defaults), ``--report-only`` unless a failed check should stop
        the pipeline. A stand-in that misses its own number is a bug of the pipeline: it
        always fails the job."""
        settings, batch = self._data_check_settings(), self.recipe_batch(check.dataset)
        args = ["--checkpoint", check.name, "--registry", check.registry, "--dest", check.dest,
                "--prepared", self.layout.prepared(check.dataset).dir,
                "--model", json.dumps(self.backbone_spec(check.backbone)),
                "--data", json.dumps(self.params["datasets"][check.dataset]["data"])]
        for source, key, flag in ((settings, "tolerance", "--tolerance"), (settings, "fail_below", "--fail-below"),
                                  (batch, "eval_micro", "--eval-micro"), (batch, "num_workers", "--workers")):
            if key in source:
                args += [flag, str(source[key])]
        for n in check.known_sizes:
            args += ["--known-size", str(n)]
        if not (check.stand_in or settings.get("stop_before_training")):
            args.append("--report-only")
        return args

    def data_checks_of(self, dataset: str) -> list[DataCheck]:
        return [c for c in self.data_checks.values() if c.dataset == dataset]

    def stop_before_training(self, dataset: str) -> list[DataCheck]:
        """The checks a fine-tune of ``dataset`` waits for (``data_check.stop_before_training``)."""
        if not self._data_check_settings().get("stop_before_training"):
            return []
        return [c for c in self.data_checks_of(dataset) if c.stand_in is None]

    def recipe_batch(self, dataset: str) -> dict[str, Any]:
        """``recipe_overrides.batch`` for ``dataset`` (eval micro-batch, loader workers), which
        the data checks' tests use as the grid's own tests do."""
        return dict(recipe_overrides(self.params, dataset).get("batch", {}))

    # ---- the GPU-hour estimate -------------------------------------------------------
    def train_gpu_hours(self, run: Run) -> float | None:
        """Compute-bound GPU-hours of one fine-tune of the paper grid: 3 x the paper's forward
        GFLOPs x Table 1's epochs x training videos x repeated-augmentation copies, at
        ASSUMED_TFLOPS; None for a synthetic dataset or a row without GFLOPs."""
        if run.gflops is None or self.params["datasets"][run.dataset].get("synth"):
            return None
        recipe = self.recipe(run)
        epochs = recipe.get("optim", {}).get("epochs")
        copies = recipe.get("data", {}).get("num_sample", 1)
        videos = PAPER_TRAIN_VIDEOS[run.dataset]
        return 3 * run.gflops * 1e9 * epochs * videos * copies / (ASSUMED_TFLOPS * 1e12 * 3600)

    def gpu_hours(self) -> tuple[float, float]:
        """(estimated GPU-hours of every fine-tune, GPU-hours the released baselines save)."""
        total = sum(self.train_gpu_hours(r) or 0.0 for r in self.runs.values())
        saved = sum(self.train_gpu_hours(r) or 0.0 for i, r in self._replaced.items() if i not in self.runs)
        return total, saved

    def backbone_spec(self, paper_backbone: str) -> dict[str, Any]:
        """The model keys a paper backbone (vit_s / vit_b) maps to in this params file:
        ``backbones.<name>`` is a ModelConfig backbone name or a mapping with ``backbone``
        and field overrides (e.g. ``{backbone: vit_mini_cpu, img_size: 64}``)."""
        spec = self.params["backbones"][paper_backbone]
        return {"backbone": spec} if isinstance(spec, str) else dict(spec)

    def video_root(self, dataset: str) -> str:
        """The folder the prepared lists' paths are relative to: ``root`` or else ``raw``
        (the lists themselves are ``self.layout.prepared(dataset)``)."""
        ds = self.params["datasets"][dataset]
        return ds.get("root", ds["raw"])

    def missing_raw(self, datasets: Iterable[str]) -> list[str]:
        """One message per dataset of ``datasets`` whose downloaded folders (``raw``, and
        ``root`` when set) do not exist, naming the params field. Synthetic datasets are
        generated by the pipeline, so they are never missing. Checked before any job
        runs: Snakemake deletes a job's old outputs (the prepared lists) before it starts."""
        problems = []
        for d in sorted(set(datasets)):
            ds = self.params["datasets"][d]
            if ds.get("synth"):
                continue
            for key in ("raw", "root"):
                if key in ds and not (self.root / ds[key]).is_dir():
                    problems.append(f"datasets.{d}.{key}: folder {ds[key]!r} does not exist "
                                    f"(download the dataset there, see docs/data.md)")
        return problems

    @staticmethod
    def _canonical(model: dict[str, Any]) -> dict[str, Any]:
        """The fully resolved model config, so equal models get equal ids."""
        from far.models.config import model_config  # no torch: config.py is plain Python

        return model_config(model).to_dict()

    # ---- pre-training ------------------------------------------------------------
    def pretraining_source(self, pretraining: str, dataset: str) -> str:
        """Which dataset the weights of ``pretraining`` for fine-tuning on ``dataset`` come from."""
        return self.params["pretraining"][pretraining]["datasets"][dataset]

    def init_checkpoint(self, run: Run) -> str | None:
        """Path of the pre-trained checkpoint a run starts from (under data/checkpoints/);
        None from scratch (``kind: none``)."""
        p = self.params["pretraining"][run.pretraining]
        if p["kind"] == "none":
            return None
        src = self.pretraining_source(run.pretraining, run.dataset)
        if p["kind"] == "offline":
            return self.layout.offline_checkpoint(pretrain_name(run.pretraining, src, run.backbone))
        return self.layout.fetched(self.fetch_filename(p["checkpoints"][src][run.backbone]))

    def registry(self) -> dict[str, Any]:
        """The checkpoint registry (``checkpoints_registry``), read once."""
        from far.fetch import load_registry  # stdlib + yaml only

        if not hasattr(self, "_registry"):
            self._registry = load_registry(self.root / self.params.get("checkpoints_registry", "params/checkpoints.yaml"))
        return self._registry

    def fetch_filename(self, name: str) -> str:
        """File name under data/checkpoints/ of registry entry ``name`` (params/checkpoints.yaml)."""
        self.registry()
        if name not in self._registry:
            raise ValueError(f"pretraining.*.checkpoints: {name!r} is not in the checkpoint registry "
                             f"(known: {', '.join(sorted(self._registry))})")
        return self._registry[name].filename

    def fetch_jobs(self) -> dict[str, str]:
        """Registry name -> file name of every official checkpoint the runs start from."""
        out = {}
        for run in self.runs.values():
            p = self.params["pretraining"][run.pretraining]
            if p["kind"] == "fetch":
                name = p["checkpoints"][self.pretraining_source(run.pretraining, run.dataset)][run.backbone]
                out[name] = self.fetch_filename(name)
        for check in self.data_checks.values():  # released models, fetched like the pre-trained ones
            if check.stand_in is None:
                out[check.name] = self.fetch_filename(check.name)
        return dict(sorted(out.items()))

    def pretrain_jobs(self) -> list[tuple[str, str, str]]:
        """(method, dataset, paper backbone) of every offline pre-training the runs need,
        MVD's two teachers included (VideoMAE and image MAE on the same data and backbone)."""
        jobs = set()
        for run in self.runs.values():
            p = self.params["pretraining"][run.pretraining]
            if p["kind"] == "offline":
                src = self.pretraining_source(run.pretraining, run.dataset)
                jobs.add((run.pretraining, src, run.backbone))
                if run.pretraining == "mvd":
                    jobs.add(("videomae", src, run.backbone))
                    jobs.add(("image_mae", src, run.backbone))
        return sorted(jobs)

    def pretrain_names(self) -> list[str]:
        return [pretrain_name(*job) for job in self.pretrain_jobs()]

    def pretrain_teachers(self, name: str) -> dict[str, str]:
        """MVD: the checkpoints of its video and image teachers; {} for the others."""
        method, src, backbone = parse_pretrain_name(name)
        if method != "mvd":
            return {}
        return {kind: self.layout.offline_checkpoint(pretrain_name(m, src, backbone))
                for kind, m in (("video", "videomae"), ("image", "image_mae"))}

    def pretrain_config(self, name: str) -> dict[str, Any]:
        """The PretrainConfig mapping of ``far pretrain --config`` for job ``name``
        (``params.pretrain``: ``common`` then the method's section)."""
        method, src, backbone = parse_pretrain_name(name)
        if name not in self.pretrain_names():
            raise KeyError(name)
        settings = copy.deepcopy(self.params.get("pretrain", {}))
        cfg = dict(settings.get("common", {})) | dict(settings.get(method, {}))
        model = self._canonical(self.backbone_spec(backbone))
        ds = self.params["datasets"][src]
        data = dict(ds["data"]) | dict(cfg.pop("data", {}))
        lists = self.layout.prepared(src)
        data |= dict(train_list=lists.train, val_list=lists.val,
                     root=self.video_root(src), num_classes=ds["num_classes"], num_frames=model["num_frames"],
                     input_size=model["img_size"])
        tracking = {k: v for k, v in self.params.get("tracking", {}).items() if k in ("enabled", "uri", "experiment")}
        cfg |= {"method": method,
                "model": self.backbone_spec(backbone),
                "data": data,
                "tracking": tracking | {"run_name": f"pretrain-{name}"} | dict(cfg.get("tracking", {}))}
        return cfg

    # ---- run configs ---------------------------------------------------------------
    def recipe(self, run: Run) -> dict[str, Any]:
        """Table 1's recipe for the run's cell, then the params file's overrides."""
        # From scratch: the recipe of the pre-training it is compared with (`recipe`).
        source = self.params["pretraining"][run.pretraining].get("recipe", run.pretraining)
        r = copy.deepcopy(self.params["recipes"][source][run.dataset][run.backbone])
        table_lr = r.get("optim", {}).get("base_lr")
        for section, values in recipe_overrides(self.params, run.dataset, run.backbone).items():
            r.setdefault(section, {}).update(values)
        optim = r.get("optim", {})
        if "base_lr_scale" in optim:
            # Table 1's learning rate times a factor: a shortened recipe (smaller batch, far
            # fewer steps) keeps Table 1's ratios between cells (ViT-B half of ViT-S on SSv2).
            scale = optim.pop("base_lr_scale")
            if "base_lr" in optim and optim["base_lr"] != table_lr:
                raise ConfigError("recipe_overrides.optim.base_lr_scale", "set base_lr or base_lr_scale, not both")
            if table_lr is None:
                raise ConfigError("recipe_overrides.optim.base_lr_scale",
                                  f"Table 1 has no base_lr for {run.pretraining}/{run.dataset}/{run.backbone}")
            optim["base_lr"] = table_lr * scale
        return r

    def run_config(self, run_id: str) -> dict[str, Any]:
        """The fully resolved run config of ``far train`` for ``run_id``."""
        run = self.runs[run_id]
        ds = self.params["datasets"][run.dataset]
        recipe = self.recipe(run)
        data = dict(ds["data"]) | recipe.pop("data", {})
        # The clip shape follows the model (16x224 in the paper, the CPU sizes' own in the default).
        lists = self.layout.prepared(run.dataset)
        data |= dict(train_list=lists.train, val_list=lists.val,
                     root=self.video_root(run.dataset), num_classes=ds["num_classes"],
                     num_frames=run.model["num_frames"],
                     input_size=run.model["img_size"])
        model = dict(run.model) | {"drop_path": recipe.pop("drop_path", run.model.get("drop_path", 0.1))}
        cfg = {
            "seed": run.seed,
            "model": model,
            "data": data,
            "init": self.init_checkpoint(run),
            "optim": recipe.pop("optim", {}),
            "batch": recipe.pop("batch", {}),
            "augment": recipe.pop("augment", {}),
            "deepspeed": dict(self.params.get("deepspeed", {})),
            "compile": dict(self.params.get("compile", {})),
            "checkpoint": dict(self.params.get("checkpoint", {})),
            "test": dict(self.params.get("test", {})) | {"clips": ds["views"][0], "crops": ds["views"][1]},
            "tracking": dict(self.params.get("tracking", {})) | {
                "run_name": display_name(run),
                "tags": {"cell": f"{run.dataset}/{run.pretraining}/{run.backbone}", "seed": str(run.seed),
                         "dataset": run.dataset, "pretraining": run.pretraining, "far.run_id": run.run_id,
                         "rows": "; ".join(f"T{t} {r}" for t, r in run.rows)},
            },
            "log": dict(self.params.get("log", {})),
        }
        if recipe:
            raise ValueError(f"recipe for {run.run_id}: unknown section(s) {sorted(recipe)}")
        return cfg


PRETRAIN_METHODS = ("videomae", "mvd", "image_mae")


def pretrain_name(method: str, dataset: str, backbone: str) -> str:
    """Folder name of an offline pre-training job: ``<method>-<dataset>-<paper backbone>``."""
    return f"{method}-{dataset}-{backbone}"


def parse_pretrain_name(name: str) -> tuple[str, str, str]:
    parts = name.split("-")
    if len(parts) != 3 or parts[0] not in PRETRAIN_METHODS:
        raise ValueError(f"not a pre-training job name (method-dataset-backbone): {name!r}")
    return parts[0], parts[1], parts[2]


def main(argv: list[str] | None = None) -> int:
    """``far grid``: list the grid's runs, or write one run's config."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="far grid", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params/default.yaml")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="one line per fine-tuning run")
    w = sub.add_parser("run-config", help="write the resolved run config of RUN_ID (for `far train --config`)")
    w.add_argument("run_id")
    w.add_argument("--out", required=True)
    pc = sub.add_parser("pretrain-config", help="write the PretrainConfig of an offline pre-training job "
                                                "(method-dataset-backbone, for `far pretrain --config`)")
    pc.add_argument("name")
    pc.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        grid = Grid.from_file(args.params)
    except ConfigError as err:
        print(f"far grid: {err}", file=sys.stderr)
        return 2
    if args.cmd == "list":
        for run in grid.runs.values():
            print(run.run_id, "|", "; ".join(f"T{t} {r}" for t, r in run.rows))
        print(f"{len(grid.runs)} runs, {len(grid.pretrain_jobs())} pre-training jobs, "
              f"{len(grid.fetch_jobs())} checkpoints to fetch, {len(grid.data_checks)} data checks", file=sys.stderr)
        total, saved = grid.gpu_hours()
        if total:
            print(f"fine-tuning: about {total:,.0f} GPU-hours at {ASSUMED_TFLOPS:g} TFLOP/s sustained (compute-bound)"
                  + (f"; the released baselines save {saved:,.0f}" if saved else ""), file=sys.stderr)
        return 0
    if args.cmd == "pretrain-config":
        if args.name not in grid.pretrain_names():
            print(f"far grid: unknown pre-training job {args.name!r} (known: {', '.join(grid.pretrain_names())})",
                  file=sys.stderr)
            return 2
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(yaml.safe_dump(grid.pretrain_config(args.name), sort_keys=False))
        return 0
    if args.run_id not in grid.runs:
        print(f"far grid: unknown run {args.run_id!r}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(yaml.safe_dump(grid.run_config(args.run_id), sort_keys=False))
    return 0
