"""The config layer (far/config.py): one constructor, one error format, no torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from far.config import ConfigError, fail, from_mapping

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    sizes: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            fail("rate", f"must be in [0, 1], got {self.rate}")


@dataclass(frozen=True)
class Outer:
    name: str
    count: int = 1
    pair: tuple[float, float] = (0.0, 1.0)
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_values_are_checked_against_the_annotations():
    cfg = from_mapping(Outer, {"name": "a", "count": 3, "pair": [1, "1e-3"], "inner": {"sizes": [4]}})
    assert cfg == Outer("a", 3, (1.0, 1e-3), Inner(0.5, (4,)), None)
    assert from_mapping(Outer, {"name": "a", "maybe": None}).maybe is None


@pytest.mark.parametrize("values, message", [
    ({}, "name: required"),
    ({"name": "a", "cuont": 2}, "cuont: unknown key (known: count, inner, maybe, name, pair)"),
    ({"name": "a", "inner": {"rtae": 1}}, "inner.rtae: unknown key (known: rate, sizes)"),
    ({"name": "a", "count": True}, "count: expected an integer, got True"),
    ({"name": "a", "count": "3"}, "count: expected an integer, got '3'"),
    ({"name": "a", "pair": [1]}, "pair: expected a list of 2, got [1]"),
    ({"name": "a", "inner": {"rate": 2}}, "inner.rate: must be in [0, 1], got 2.0"),
    ({"name": "a", "inner": {"sizes": [1, "x"]}}, "inner.sizes[1]: expected an integer, got 'x'"),
    ({"name": "a", "inner": 3}, "inner: expected a mapping, got int"),
])
def test_one_error_format_naming_the_dotted_field(values, message):
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, values)
    assert str(err.value) == message


def test_a_run_config_file_error_names_the_file_and_the_field(tmp_path):
    from far.engine.config import load_run_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, "model": {"backbone": "vit_tiny_cpu", "num_classes": 4},
                                    "data": {"dataset": "k400", "num_classes": 4, "num_frames": 8, "input_size": 64,
                                             "short_side": 64},
                                    "optim": {"layer_decay": 1.5}}))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value) == f"{path}: optim.layer_decay: must be in (0, 1], got 1.5"
    path.write_text("seed: 0\nmodel: {backbone: vit_tiny_cpu, colour: red}\ndata: {}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: model\.colour: unknown key \(known: backbone, variant,"):
        load_run_config(path)
    path.write_text("seed: 0\nmodel: {backbone: vit_tiny_cpu}\ndata: {stride: 0}\n")
    with pytest.raises(ConfigError, match=rf"^{path}: data\.stride: must be >= 1"):
        load_run_config(path)


def test_pretrain_and_run_configs_share_tracking_and_deepspeed():
    from far.engine.config import DeepSpeedConfig, TrackingConfig
    from far.pretrain.config import PretrainConfig, config_from_dict

    cfg = config_from_dict({"tracking": {"enabled": False}, "deepspeed": {"zero_stage": 1}})
    assert isinstance(cfg.tracking, TrackingConfig) and isinstance(cfg.deepspeed, DeepSpeedConfig)
    assert PretrainConfig.__dataclass_fields__["tracking"].type in ("TrackingConfig", TrackingConfig)
    with pytest.raises(ConfigError, match=r"^deepspeed\.zero_stage: 7 is not one of 0, 1, 2, 3$"):
        config_from_dict({"deepspeed": {"zero_stage": 7}})


@pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                    reason="snakemake is not installed")
def test_parsing_the_snakefile_imports_no_torch(tmp_path):
    """`snakemake -n` validates every run and pre-training config without torch: a
    torch that refuses to import stands in for the real one."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch was imported while parsing the Snakefile')\n")
    work = tmp_path / "wf"
    work.mkdir()
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(ROOT / name, work / name)
    shutil.copytree(ROOT / "workflow", work / "workflow")
    shutil.copytree(ROOT / "params", work / "params")
    (work / "profiles").symlink_to("workflow/profiles")
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    env = os.environ | {"PYTHONPATH": str(tmp_path / "fake")}
    r = subprocess.run([snakemake, "-n", "--quiet", "rules"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "train" in r.stdout
