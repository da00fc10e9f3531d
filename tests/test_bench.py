"""``far bench`` without a GPU: option parsing and the row plan, the FLOP source and MFU,
the report table, the allocator-trace replay behind --memory, and the gate that runs the
GPU equality tests before timing."""

import sys

import pytest
import torch

from far.bench.cases import case_config
from far.bench.cli import Row, main, parse_args, plan, turn_groups
from far.bench.gate import GateError, junit_summary, run_gpu_tests
from far.bench.memory import allocation_site, by_site, live_at_peak
from far.bench.mfu import forward_macs, mfu
from far.bench.report import format_table
from far.complexity import count_flops

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def test_default_plan_times_the_reference_eager_only():
    rows = plan(parse_args([]))
    assert len(rows) == 2 * 5 + 2 * 3  # eager: every variant; compiled: global, hsda, far
    assert {r.variant for r in rows if r.mode == "compiled"} == {"global", "hsda", "far"}
    assert rows[0] == Row("vit_s", "reference", "eager")
    assert not any(r.profile or r.memory or r.checkpointing for r in rows)


def test_plan_profiles_and_lists_memory_for_vit_b_only_and_appends_checkpointing():
    args = parse_args(["--sizes", "vit_s,vit_b", "--variants", "global,far", "--modes", "compiled",
                       "--profile", "far", "--memory", "far,global", "--checkpointing", "far"])
    rows = plan(args)
    assert [(r.size, r.variant, r.mode, r.checkpointing) for r in rows] == [
        ("vit_s", "global", "compiled", False), ("vit_s", "far", "compiled", False),
        ("vit_b", "global", "compiled", False), ("vit_b", "far", "compiled", False),
        ("vit_s", "far", "eager", True), ("vit_b", "far", "eager", True)]
    assert [r.profile for r in rows] == [False, False, False, True, False, False]
    assert [r.memory for r in rows] == [False, False, True, True, False, False]


def test_rows_of_one_size_and_mode_take_turns_and_checkpointing_rows_run_alone():
    args = parse_args(["--sizes", "vit_s,vit_b", "--variants", "global,far", "--checkpointing", "far"])
    assert args.turns == 5
    groups = turn_groups(plan(args), args.turns)
    assert [[(r.size, r.variant, r.mode, r.checkpointing) for r in g] for g in groups] == [
        [("vit_s", "global", "eager", False), ("vit_s", "far", "eager", False)],
        [("vit_b", "global", "eager", False), ("vit_b", "far", "eager", False)],
        [("vit_s", "global", "compiled", False), ("vit_s", "far", "compiled", False)],
        [("vit_b", "global", "compiled", False), ("vit_b", "far", "compiled", False)],
        [("vit_s", "far", "eager", True)], [("vit_b", "far", "eager", True)]]
    # --turns 0: every row alone, in plan order (the earlier behaviour)
    assert turn_groups(plan(args), 0) == [[r] for r in plan(args)]


def test_a_group_reports_the_turns_times_and_keeps_the_times_alone(monkeypatch):
    """time_group on the CPU with the step and its timers stood in for: every row is timed
    alone first, then the rows take turns, and the reported step time is the turns' median."""
    import far.bench.timing as timing
    from far.bench.cli import time_group

    built = []

    class FakeStep:
        def __init__(self, cfg, batch, compile_mode=None):
            self.variant = cfg.attention  # global vs FAR's head split
            built.append(self)

        def close(self):
            built.remove(self)

    def fake_time_step(step, steps, warmup, base_bytes=0):
        return dict(times_ms=[10.0] * steps, step_ms=10.0, step_ms_min=10.0, step_ms_max=10.0, peak_mem_gib=1.0,
                    saved_for_backward_gib=0.5, warmup_s=0.1)

    def fake_turns(steps, rounds, n):
        assert len(built) == 2  # both rows alive while taking turns
        return {i: [20.0 + i] * (rounds * n) for i in steps}

    monkeypatch.setattr(timing, "TrainStep", FakeStep)
    monkeypatch.setattr(timing, "time_step", fake_time_step)
    monkeypatch.setattr(timing, "time_in_turns", fake_turns)
    args = parse_args(["--sizes", "vit_s", "--variants", "global,far", "--modes", "eager", "--steps", "20"])
    rows = plan(args)
    out = time_group(rows, args, {(r.size, r.variant): 1e9 for r in rows}, log=lambda s: None)
    assert [(o["variant"], o["step_ms"], o["step_ms_alone"], o["timing"]) for o in out] == [
        ("global", 20.0, 10.0, "turns (5 x 4 steps)"), ("far", 21.0, 10.0, "turns (5 x 4 steps)")]
    assert out[0]["clips_per_s"] == pytest.approx(32 / 20.0 * 1e3) and out[0]["peak_mem_gib"] == 1.0
    assert not built  # every step closed


@pytest.mark.parametrize("argv", [["--sizes", "vit_h"], ["--variants", "far,fast"], ["--modes", "jit"],
                                  ["--sdpa", "cudnn,fastest"], ["--compile-mode", "turbo"]])
def test_unknown_names_are_refused_when_parsing(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "far bench: error" in capsys.readouterr().err


def test_flops_come_from_the_complexity_counter(monkeypatch):
    small = case_config("vit_s", "far", embed_dim=96, num_heads=6, depth=1, img_size=64, num_frames=8)
    assert forward_macs(small) == count_flops(small)[0]
    # without fvcore there is no other count to fall back on: the bench says what is missing
    monkeypatch.delitem(sys.modules, "far.complexity")
    for name in [m for m in sys.modules if m.split(".")[0] == "fvcore"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(RuntimeError, match="needs fvcore"):
        forward_macs(small)


def test_mfu_keeps_the_published_meaning():
    # benchmarks/results/gpu_step.md: ViT-B FAR compiled, batch 16, 52.50 ms a step, fvcore
    # 176.27 GMACs per clip -> 40.8 % of 790 TFLOP/s.
    assert mfu(176.269767168e9, 16, 52.50) == pytest.approx(0.408, abs=5e-4)


def _row(size, variant, mode, ms, peak, batch=16, mfu_=0.4):
    return dict(size=size, variant=variant, mode=mode, grad_checkpointing=False, step_ms=ms,
                clips_per_s=batch / ms * 1e3, peak_mem_gib=peak, mfu=mfu_)


def test_table_gives_ratios_to_global_and_to_the_reference():
    rows = [_row("vit_b", "reference", "eager", 200.0, 40.0), _row("vit_b", "global", "eager", 50.0, 8.0),
            _row("vit_b", "far", "eager", 62.5, 8.8), _row("vit_b", "far", "compiled", 40.0, None)]
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:6] == ["model", "variant", "mode", "ckpt", "step", "ms"]
    far_eager = lines[4].split()
    assert far_eager[6:] == ["0.800", "3.20", "8.80", "1.100", "40.0"]  # x global, x ref, GiB, mem/glob, MFU %
    far_compiled = lines[5].split()  # no compiled global row: no ratio; CUDA graphs: no peak
    assert far_compiled[6:] == ["-", "5.00", "nan", "-", "40.0"]


def test_live_at_peak_replays_allocations_and_frees():
    fr = lambda name, line: [dict(filename="/x/torch/nn/functional.py", line=1, name="linear"),
                             dict(filename=f"/work/far/{name}", line=line, name="forward")]
    trace = [
        dict(action="alloc", addr=1, size=100, frames=fr("a.py", 3)),
        dict(action="alloc", addr=2, size=50, frames=fr("b.py", 4)),
        dict(action="free_requested", addr=1, size=100),  # not yet free: the stream may still use it
        dict(action="alloc", addr=3, size=30, frames=fr("c.py", 5)),  # peak: 180
        dict(action="free_completed", addr=1, size=100),
        dict(action="alloc", addr=4, size=120, frames=fr("d.py", 6)),  # 200: new peak
        dict(action="free_completed", addr=4, size=120),
        dict(action="free_completed", addr=9, size=10),  # block allocated before the trace: ignored
    ]
    peak, live = live_at_peak(trace)
    assert peak == 200
    assert sorted(b["addr"] for b in live) == [2, 3, 4]
    # the allocation site skips torch's own frames
    assert allocation_site(live[0]["frames"]).startswith("b.py:4 forward")
    sites = by_site(live + [dict(size=2**30, frames=fr("b.py", 9))])
    assert list(sites["by_file"]) == ["b.py", "d.py", "c.py"]
    assert sites["by_file"]["b.py"] == pytest.approx(1 + 50 / 2**30)
    assert [s["blocks"] for s in sites["sites"]] == [1, 1, 1, 1]


def test_junit_summary_sums_the_suites_and_keeps_the_recorded_errors(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2">'
                      '<testcase classname="tests.t" name="a"><properties><property name="err" value="1e-7"/>'
                      '</properties></testcase><testcase classname="tests.t" name="b"/></testsuite>'
                      '<testsuite tests="3" failures="0" errors="1" skipped="0"/></testsuites>')
    assert junit_summary(report) == dict(tests=8, failures=1, errors=1, skipped=2,
                                         properties={"tests.t::a": {"err": "1e-7"}})


def test_gate_needs_the_repository_tests(tmp_path):
    with pytest.raises(GateError, match="--no-check"):
        run_gpu_tests(tmp_path)


@no_cuda
def test_gate_refuses_skipped_gpu_tests_as_unchecked():
    """Without CUDA every GPU test is skipped: pytest succeeds, the gate does not."""
    with pytest.raises(GateError, match="skipped"):
        run_gpu_tests()


@no_cuda
def test_bench_without_cuda_stops_before_writing(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "vit_s", "--variants", "far", "--modes", "eager", "--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_time_in_turns_alternates_the_steps():
    """Steps compared in turns: n calls of each, round after round, so every step's timings
    are spread over the same stretch of time."""
    from far.bench.timing import time_in_turns

    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("global", "far")}

    def timer(fn, n):  # stands in for the CUDA-event timer: call n times, "time" each call
        return [fn() or float(len(calls)) for _ in range(n)]

    times = time_in_turns(steps, rounds=3, n=2, timer=timer)
    assert calls == ["global", "global", "far", "far"] * 3
    assert times == {"global": [1.0, 2.0, 5.0, 6.0, 9.0, 10.0], "far": [3.0, 4.0, 7.0, 8.0, 11.0, 12.0]}


def test_train_pace_configs_are_valid_far_train_configs():
    """benchmarks/train_pace.py writes run configs that far train accepts, for both of its
    model variants and decoders, and times far bench's matching case for each."""
    import importlib.util
    from pathlib import Path

    from far.bench.cases import VARIANTS
    from far.engine.config import run_config

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_pace.py"
    spec = importlib.util.spec_from_file_location("train_pace", path)
    pace = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pace)
    data = {"train_list": "train.csv", "val_list": "val.csv", "root": "videos", "num_classes": 10}
    for variant in ("baseline", "far"):
        for decoder in ("cpu", "nvdec"):
            cfg = run_config(pace.run_config(data, "vit_b", variant, 24, 14, 150, True, None, decoder))
            assert cfg.data_config().decoder == decoder and (cfg.model_config().tgi != "none") == (variant == "far")
        assert pace.BENCH_CASE[variant] in VARIANTS
    with pytest.raises(SystemExit):
        pace.main(["--variants", "global"])  # far bench's name, not far train's
