"""``far data check``: released fine-tuned models against the user's validation data.

End to end without the internet: a checkpoint in VideoMAE's official fine-tuned layout
(``{"module": state_dict}`` with its head) is served by a local HTTP server, fetched
through a ``kind: finetuned`` registry entry, tested on a tiny synthetic SSv2 with
``far test``'s multi-view code path and compared with a stated "published" number. Its
head predicts one class whatever the input, so the measured top-1 is known exactly (half
of the videos are of that class). Plus the verdict on constructed numbers, the
validation-set-size check, the registry's new fields, and the Hugging Face fine-tuned
layout through the same loader.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from far.checkpoints import CheckpointError, load_checkpoint, to_format
from far.engine.data_check import EXIT_FAIL, check_set_size, judge, sampling_error
from far.fetch import RegistryError, load_registry
from far.models import build_model

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"DS_ACCELERATOR": "cpu", "DS_BUILD_OPS": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
FAR = [sys.executable, "-m", "far.cli"]
TINY = dict(backbone="vit_tiny_cpu", depth=1, drop_path=0.0, num_classes=2, variant="baseline")
DRIVE_ID = "released_finetuned_id"


# ---- the registry ---------------------------------------------------------------------------
def test_project_registry_lists_the_released_finetuned_models() -> None:
    reg = load_registry(REPO / "params" / "checkpoints.yaml")
    # (name, published top-1, views) as in VideoMAE's MODEL_ZOO.md and issue 20's table
    for name, top1, views in [("videomae_vit_s_ssv2_ft", 66.8, (2, 3)), ("videomae_vit_b_ssv2_800ep_ft", 69.6, (2, 3)),
                              ("videomae_vit_b_ssv2_ft", 70.8, (2, 3)), ("videomae_vit_s_k400_ft", 79.0, (5, 3)),
                              ("videomae_vit_b_k400_ft", 80.0, (5, 3))]:
        spec = reg[name]
        assert spec.kind == "finetuned" and spec.format == "finetuned" and spec.sources[0].kind == "gdrive"
        assert spec.published.top1 == top1 and (spec.published.clips, spec.published.crops) == views
        assert spec.published.top5 > top1 and spec.sha256 is None  # no hash is published for these files
    hf = {s.sources[0].repo for s in reg.values() if s.kind == "finetuned" and s.format == "hf_videomae"}
    assert hf == {f"MCG-NJU/videomae-{b}-finetuned-{d}" for b in ("small", "base") for d in ("kinetics", "ssv2")}
    assert all(s.published is None for s in reg.values() if s.kind == "pretrained")


def _ft_entry(**published: object) -> dict:
    pub = {"dataset": "ssv2", "top1": 50.0, "top5": 100.0, "clips": 2, "crops": 3, "source": "stated by the test"}
    return {"name": "tiny_ft", "kind": "finetuned", "method": "videomae", "backbone": "vit_s",
            "pretrain_dataset": "ssv2", "format": "finetuned", "filename": "tiny_ft.pth",
            "sources": [{"kind": "gdrive", "id": DRIVE_ID}], "sha256": None, "size": None, "published": pub | published}


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda e: e.pop("published"), "checkpoints[0].published: required for kind finetuned"),
    (lambda e: e.update(kind="pretrained"), "checkpoints[0].published: required for kind finetuned and only there"),
    (lambda e: e["published"].update(top1=101), "checkpoints[0].published.top1: must be a percentage"),
    (lambda e: e["published"].update(top5=40.0), "checkpoints[0].published.top5"),
    (lambda e: e["published"].update(crops=2), "checkpoints[0].published.crops"),
    (lambda e: e["published"].pop("source"), "checkpoints[0].published.source: required"),
    (lambda e: e.update(kind="best"), "checkpoints[0].kind: 'best' is not one of pretrained, finetuned"),
    (lambda e: e.update(format="videomae_pretrain"), "checkpoints[0].format: a fine-tuned entry"),
])
def test_registry_errors_name_the_field(tmp_path: Path, mutate, needle: str) -> None:
    entry = _ft_entry()
    mutate(entry)
    path = tmp_path / "reg.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "checkpoints": [entry]}))
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)


# ---- the verdict ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("measured", "status", "words"), [
    (66.3, "pass", "your data reproduce the released model within 1 points"),
    (67.8, "pass", "within 1 points"),
    (65.0, "borderline", "borderline: measured 65.00 vs published 66.80 (-1.80 points)"),
    (63.8, "borderline", "borderline"),  # exactly 3 below: not more than fail_below
    (63.7, "fail", "do not train yet: the released model scores 63.70 on your data, 3.10 points below"),
    (69.0, "borderline", "above the published 66.80"),
    (float("nan"), "fail", "do not train yet: no video could be tested"),
])
def test_verdict(measured: float, status: str, words: str) -> None:
    v = judge(66.8, measured, tolerance=1.0, fail_below=3.0, dataset="ssv2", num_classes=174)
    assert v.status == status and words in v.text, v.text
    assert v.exit_status == (EXIT_FAIL if status == "fail" else 0)
    assert (v.causes == []) == (status == "pass")
    if status == "fail" and math.isfinite(measured):
        assert any("SSv2 conversion" in c for c in v.causes) and any("--data_set" in c for c in v.causes)


def test_verdict_puts_the_evidence_first() -> None:
    size = check_set_size("k400", 19796, 19000)
    v = judge(80.0, 0.3, dataset="k400", num_classes=400, set_size=size, unreadable=4, missing=796)
    assert v.status == "fail"
    assert v.causes[0].startswith("near chance (chance is 0.25 %): the label mapping")
    assert v.causes[1].startswith("the K400 copy: 19,000 videos listed of 19,796 annotated")
    assert v.causes[2].startswith("corrupt or missing files: 4 unreadable at test time, 796 missing")
    assert any("short side 320" in c for c in v.causes)
    with pytest.raises(ValueError):
        judge(80.0, 79.0, tolerance=2.0, fail_below=1.0)


# ---- the validation-set size -------------------------------------------------------------------
def test_set_size_names_the_matching_copy() -> None:
    for n, words in [(19796, "MMAction"), (19761, "2019"), (17747, "Kinetics site serves now")]:
        r = check_set_size("k400", n, n)
        assert r["ok"] and words in r["matches"] and r["text"].startswith(f"{n:,} videos listed: matches")
    r = check_set_size("k400", None, 19700)
    assert not r["ok"] and r["matches"] is None
    assert "matches none of the known sizes (19,796, 19,761, 17,747); nearest 19,761" in r["text"] and "-61" in r["text"]
    assert check_set_size("ssv2", 24777, 24777)["ok"]
    r = check_set_size("ssv2", 24777, 24770)
    assert not r["ok"] and "7 videos are missing or unusable" in r["text"]
    assert check_set_size("ssv2", 4, 4, known=((4, "the synthetic set"),))["matches"] == "the synthetic set"
    assert sampling_error(70.0, 24777) == pytest.approx(0.291, abs=1e-3)


# ---- loading: official and Hugging Face fine-tuned layouts, complete or refused ---------------
def test_hf_finetuned_layout_loads_through_the_same_path(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_model(**TINY).eval()
    hf = to_format(src.state_dict(), "hf_videomae")  # the names VideoMAEForVideoClassification saves
    for key in ("videomae.embeddings.patch_embeddings.projection.weight",
                "videomae.encoder.layer.0.attention.attention.query.weight",
                "videomae.encoder.layer.0.attention.attention.q_bias", "videomae.encoder.layer.0.output.dense.weight",
                "fc_norm.weight", "classifier.weight", "classifier.bias"):
        assert key in hf, key
    torch.save(hf, tmp_path / "pytorch_model.bin")
    dst = build_model(**TINY).eval()
    report = load_checkpoint(dst, tmp_path / "pytorch_model.bin", complete=True)
    assert report.format == "hf_videomae" and not report.initialised
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    # an HF file without its classifier is a pre-training to the loader, but not a released model
    torch.save({k: v for k, v in hf.items() if not k.startswith("classifier.")}, tmp_path / "headless.bin")
    with pytest.raises(CheckpointError, match=r"missing 2 keys.*head\.(weight|bias).*complete model is required"):
        load_checkpoint(build_model(**TINY), tmp_path / "headless.bin", complete=True)
    assert "head.weight" in load_checkpoint(build_model(**TINY), tmp_path / "headless.bin").initialised


def test_official_finetuned_layout_is_complete_or_refused(tmp_path: Path) -> None:
    src = build_model(**TINY)
    state = src.state_dict()
    torch.save({"module": state}, tmp_path / "ft.pth")
    assert load_checkpoint(build_model(**TINY), tmp_path / "ft.pth", complete=True).format == "finetuned"
    torch.save({"module": {k: v for k, v in state.items() if not k.startswith("fc_norm.")}}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"fc_norm\.weight"):
        load_checkpoint(build_model(**TINY), tmp_path / "cut.pth", complete=True)


# ---- end to end: served, fetched, tested, compared -------------------------------------------------
def _constant_checkpoint() -> bytes:
    """{"module": state_dict} of the tiny model whose head always says class 0."""
    torch.manual_seed(0)
    state = build_model(**TINY).state_dict()
    state["head.weight"] = torch.zeros_like(state["head.weight"])
    state["head.bias"] = torch.tensor([5.0, 0.0])
    buf = io.BytesIO()
    torch.save({"module": state, "epoch": 39}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def served() -> str:
    body = _constant_checkpoint()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            if self.path.startswith("/gd/download?") and f"id={DRIVE_ID}" in self.path:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/gd"
    httpd.shutdown()
    httpd.server_close()


def _far(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(FAR + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_released_model_fetched_tested_and_compared(tmp_path: Path, served: str) -> None:
    from far.data.cli import main as data_main

    assert data_main(["synth", "--kind", "ssv2", "--out", str(tmp_path / "raw"), "--classes", "2",
                      "--videos-per-class-train", "1", "--videos-per-class-val", "2", "--size", "64x80",
                      "--frames", "16", "--quiet"]) == 0
    assert data_main(["prepare", "--dataset", "ssv2", "--root", str(tmp_path / "raw"), "--out",
                      str(tmp_path / "prep"), "--quiet"]) == 0
    reg = tmp_path / "checkpoints.yaml"
    reg.write_text(yaml.safe_dump({"version": 1, "checkpoints": [_ft_entry()]}))
    env = ENV | {"FAR_GDRIVE_URL": served}
    common = ["--prepared", "prep", "--model", "{backbone: vit_tiny_cpu, depth: 1}", "--data", "{short_side: 64}",
              "--workers", "0", "--no-progress"]
    r = _far(["data", "check", "--checkpoint", "tiny_ft", "--registry", str(reg), "--dest", "ckpt",
              "--report", "reports/data_check.md", "--known-size", "4"] + common, tmp_path, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "ckpt" / "tiny_ft.pth").read_bytes() == _constant_checkpoint()  # fetched from the server
    check = json.loads((tmp_path / "reports" / "data_check.json").read_text())["checks"][0]
    assert check["measured"]["top1"] == 50.0 and check["measured"]["videos"] == 4  # 2 of 4 videos are class 0
    assert check["expected"] == {"top1": 50.0, "top5": 100.0} and check["difference"]["top1"] == 0.0
    assert check["views"] == "2x3" and check["checkpoint"]["format"] == "finetuned"
    assert check["set_size"]["ok"] and check["unreadable"] == [] and check["verdict"]["status"] == "pass"
    md = (tmp_path / "reports" / "data_check.md").read_text()
    assert "PASS: your data reproduce the released model within 1 points" in md
    assert (tmp_path / "reports" / "data_check" / "tiny_ft" / "test" / "metrics.json").is_file()

    # The same file by path with a published number it cannot reach: fails, and the exit status says so.
    r = _far(["data", "check", "--checkpoint", "ckpt/tiny_ft.pth", "--published-top1", "80",
              "--report", "reports/fail.md"] + common, tmp_path, env)
    assert r.returncode == EXIT_FAIL, r.stdout + r.stderr
    assert "FAIL: do not train yet" in r.stdout
    md = (tmp_path / "reports" / "fail.md").read_text()
    assert "30.00 points below its published 80.00" in md and "matches none of the known sizes (24,777)" in md
    assert "Likely causes" in md and "the validation set: 4 videos listed" in md


# ---- the stand-in: a fine-tune of the grid exported as a release ------------------------------------
def _finished_run(run: Path, top1: float = 62.5) -> None:
    """A run folder as far train + far test leave it (model.pth, run.yaml, test/metrics.json)."""
    from far.checkpoints import save_finetuned

    torch.manual_seed(1)
    (run / "test").mkdir(parents=True)
    save_finetuned(build_model(**TINY), run / "model.pth", epoch=3)
    (run / "run.yaml").write_text(yaml.safe_dump({"data": {"dataset": "ssv2"}}))
    (run / "test" / "metrics.json").write_text(json.dumps({"top1": top1, "top5": 100.0, "videos": 8, "clips": 2,
                                                           "crops": 3}))


def test_stand_in_is_a_valid_release_fetched_through_a_file_source(tmp_path: Path) -> None:
    from far.engine.data_check import export_stand_in, registry_target

    run = tmp_path / "results" / "runs" / "ssv2-videomae-vit_s-baseline-s0"
    _finished_run(run)
    pth, reg = run / "release" / "stand_in.pth", run / "release" / "stand_in.yaml"
    entry = export_stand_in(run, "stand_in", method="videomae", backbone="vit_s", pretrain_dataset="ssv2",
                            checkpoint=pth, registry=reg)
    assert entry["published"] == {"dataset": "ssv2", "top1": 62.5, "top5": 100.0, "clips": 2, "crops": 3,
                                  "source": f"its own test, {run}/test/metrics.json"}
    spec = load_registry(reg)["stand_in"]
    assert spec.sources[0].kind == "file" and spec.size == pth.stat().st_size
    # The official fine-tuned layout, complete: the same weights as far train's own file.
    assert set(torch.load(pth, weights_only=True)) == {"module"}
    model = build_model(**TINY)
    assert load_checkpoint(model, pth, complete=True).format == "finetuned"
    ref = build_model(**TINY)
    load_checkpoint(ref, run / "model.pth")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    # Fetched like any registry entry: copied from the file source, verified against its SHA-256.
    target = registry_target("stand_in", reg, tmp_path / "dest", progress=False, log=lambda m: None)
    assert target.path.read_bytes() == pth.read_bytes() and target.top1 == 62.5
    # A changed source no longer matches the registry's hash: refused, nothing left at the destination.
    data = bytearray(pth.read_bytes())
    data[-100] ^= 0xFF
    pth.write_bytes(bytes(data))
    from far.fetch import AllSourcesFailed

    with pytest.raises(AllSourcesFailed, match="SHA-256"):
        registry_target("stand_in", reg, tmp_path / "dest2", progress=False, log=lambda m: None)
    assert not (tmp_path / "dest2" / "stand_in.pth").exists()


def test_check_report_gathers_every_record(tmp_path: Path) -> None:
    from far.engine.data_check import read_records, write_report

    def record(name: str, measured: float) -> dict:
        v = judge(50.0, measured, dataset="ssv2")
        return {"checkpoint": {"name": name, "path": f"{name}.pth", "format": "finetuned", "published_in": "x",
                               "loaded_tensors": 3},
                "dataset": "ssv2", "prepared": "prep", "views": "2x3", "expected": {"top1": 50.0, "top5": None},
                "measured": {"top1": measured, "top5": 90.0, "videos": 8, "expected_videos": 8,
                             "sampling_error_top1": sampling_error(measured, 8)},
                "difference": {"top1": measured - 50.0, "top5": None},
                "set_size": check_set_size("ssv2", 8, 8, ((8, "given"),)), "unreadable": [],
                "preparation": {"missing": 0, "unusable": 0}, "thresholds": {"tolerance": 1.0, "fail_below": 3.0},
                "verdict": {"status": v.status, "text": v.text, "causes": v.causes}, "max_videos": None}

    paths = []
    for name, measured in (("a", 50.0), ("b", 40.0)):
        md, js = write_report([record(name, measured)], tmp_path / name / "data_check.md")
        paths.append(js)
    assert [r["checkpoint"]["name"] for r in read_records(paths)] == ["a", "b"]
    assert data_main(["check-report", *map(str, paths), "--report", str(tmp_path / "all.md")]) == 0
    text = (tmp_path / "all.md").read_text()
    assert "## a on ssv2" in text and "## b on ssv2" in text and "PASS" in text and "FAIL: do not train yet" in text
    (tmp_path / "bad.json").write_text("{}")
    assert data_main(["check-report", str(tmp_path / "bad.json"), "--report", str(tmp_path / "x.md")]) == 2


def data_main(argv: list[str]) -> int:
    from far.data.cli import main

    return main(argv)


# ---- the pipeline: checks before the fine-tunes, baseline cells from released models -----------------
def _paper_params(released: bool) -> dict:
    from far.layout import load_params

    params = load_params(REPO / "params" / "paper.yaml")
    params["data_check"]["baselines_from_released"] = released
    return params


def test_paper_grid_checks_released_models_before_fine_tuning() -> None:
    from far.grid import Grid

    grid = Grid(_paper_params(False), root=REPO)
    assert sorted(grid.data_checks) == ["videomae_vit_b_k400_1600ep_ft", "videomae_vit_b_ssv2_ft",
                                        "videomae_vit_s_k400_ft", "videomae_vit_s_ssv2_ft"]
    assert {c.name for c in grid.stop_before_training("ssv2")} == {"videomae_vit_s_ssv2_ft", "videomae_vit_b_ssv2_ft"}
    assert set(grid.data_checks) <= set(grid.fetch_jobs())  # fetched like the pre-trained weights
    assert len(grid.runs) == 54 and not grid.released_runs
    total, saved = grid.gpu_hours()
    assert 3000 < total < 3100 and saved == 0  # docs/pipeline.md: about 3,100 with testing


def test_baselines_from_released_replace_eight_fine_tunes() -> None:
    from far.grid import Grid

    grid = Grid(_paper_params(True), root=REPO)
    released = {(c.table, c.row): c for c in grid.cells if c.released}
    assert set(released) == {(t, f"VideoMAE ViT-{b}") for t in ("7", "8") for b in "SB"}
    assert released[("8", "VideoMAE ViT-B")].run_ids == ["released-videomae_vit_b_k400_1600ep_ft"]
    assert len(grid.runs) == 54 - 8 and len(grid.released_runs) == 4
    assert not any(r.run_id.startswith("released-") for r in grid.runs.values())  # never trained
    total, saved = grid.gpu_hours()
    assert saved == pytest.approx(613.0, abs=1.0) and total == pytest.approx(3052.1 - saved, abs=1.0)


def test_released_cells_come_from_the_checks_test(tmp_path: Path) -> None:
    """Tables and the claims' pairing read a released model's one test for every seed."""
    from far.grid import Grid
    from far.reports.collect import collect
    from far.reports.tables import accuracy_table

    grid = Grid(_paper_params(True), root=REPO)
    results = tmp_path / "results"
    for rid in list(grid.runs) + list(grid.released_runs):
        d = results / "runs" / rid / "test"
        d.mkdir(parents=True)
        top1 = 70.8 if rid == "released-videomae_vit_b_ssv2_ft" else 50.0
        (d / "metrics.json").write_text(json.dumps({"top1": top1, "top5": 90.0, "videos": 10, "clips": 2,
                                                    "crops": 3, "unreadable": []}))
    res = collect(grid, results)
    cell = next(c for c in res.table_cells("7") if c.cell.row == "VideoMAE ViT-B")
    assert cell.stat("top1").values == (70.8,) and cell.run_for_seed(0) is cell.run_for_seed(1)
    assert not [m for m in res.missing_files() if "released-" in m]  # no train files expected there
    table = accuracy_table(grid.tables["7"], res.table_cells("7"), {}, grid.params)
    rec = table.data.set_index("row").loc["VideoMAE ViT-B"]
    assert rec["released"] == "videomae_vit_b_ssv2_ft" and rec["top1_mean"] == 70.8
    assert any("Released weights, tested here" in n for n in table.notes)
    assert any("(released weights `videomae_vit_b_ssv2_ft`, tested here)" in row[0] for row in table.rows)


def test_data_check_settings_are_validated() -> None:
    from far.config import ConfigError
    from far.grid import Grid

    params = _paper_params(False)
    params["data_check"]["released"]["ssv2"] = ["videomae_vit_s_ssv2"]  # a pre-training
    with pytest.raises(ConfigError, match=r"data_check.released.ssv2\[0\].*not a released fine-tuned model"):
        Grid(params, root=REPO)
    params["data_check"]["released"] = {"ssv2": ["videomae_vit_s_k400_ft"]}
    with pytest.raises(ConfigError, match=r"fine-tuned on k400, not ssv2"):
        Grid(params, root=REPO)
    params = _paper_params(True)
    params["data_check"]["released"]["k400"] = ["videomae_vit_s_k400_ft"]
    with pytest.raises(ConfigError, match=r"needs a released vit_b model of k400"):
        Grid(params, root=REPO)


def test_released_baselines_drop_figure_7_and_the_paper_dry_run_still_plans(tmp_path: Path) -> None:
    """Figure 7 explains T8's VideoMAE ViT-S baseline: from released weights there is no run
    to explain, so only Figure 6 is drawn; the workflow plans the rest (8 fine-tunes fewer)."""
    import shutil

    from far.grid import Grid
    from far.reports.gradcam import figure_jobs

    assert {f for f, _ in figure_jobs(Grid(_paper_params(True), root=REPO))} == {"6"}
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    for name in ("workflow", "params"):
        shutil.copytree(REPO / name, tmp_path / name)
    (tmp_path / "profiles").symlink_to("workflow/profiles")
    text = (tmp_path / "params" / "paper.yaml").read_text()
    (tmp_path / "params" / "paper.yaml").write_text(
        text.replace("baselines_from_released: false", "baselines_from_released: true"))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    r = subprocess.run([snakemake, "-n", "--quiet", "rules", "--configfile", "params/paper.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = {m[0]: int(m[1]) for m in (line.split() for line in r.stdout.splitlines()) if len(m) == 2
              and m[1].isdigit()}
    assert counts["train"] == counts["test"] == 46 and counts["data_check"] == 4 and counts["gradcam"] == 2


def test_data_check_arguments_come_from_the_params() -> None:
    """far/grid.py assembles far data check's arguments (the rule only quotes them): the
    dataset's data, the params' backbone, thresholds and test batch, --report-only unless a
    failed check should stop the pipeline (a stand-in always fails its job)."""
    from far.grid import Grid
    from far.layout import load_params

    default = Grid(load_params(REPO / "params" / "default.yaml"), root=REPO)
    args = default.data_check_args(default.data_checks["stand_in_ssv2_videomae_vit_s"])
    pairs = dict(zip(args[::2], args[1::2]))
    assert json.loads(pairs["--model"]) == {"backbone": "vit_tiny_cpu"} and pairs["--known-size"] == "160"
    assert (pairs["--tolerance"], pairs["--fail-below"], pairs["--eval-micro"], pairs["--workers"]) == \
        ("1.0", "3.0", "30", "0")
    assert json.loads(pairs["--data"])["sampling"] == "segment" and "--report-only" not in args
    paper = _paper_params(False)
    paper["data_check"]["stop_before_training"] = False
    del paper["data_check"]["tolerance"]
    grid = Grid(paper, root=REPO)
    args = grid.data_check_args(grid.data_checks["videomae_vit_b_k400_1600ep_ft"])
    assert args[-1] == "--report-only" and "--tolerance" not in args and "--known-size" not in args
    assert grid.data_checks["videomae_vit_b_k400_1600ep_ft"].checkpoint == \
        "data/checkpoints/videomae_vit_b_k400_finetuned_1600ep.pth"
