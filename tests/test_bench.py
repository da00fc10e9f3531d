"""``far bench`` helpers that need no GPU: the allocator-trace replay behind --memory."""

from far.bench.cli import _site, live_at_peak


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
    assert _site(live[0]["frames"]).startswith("b.py:4 forward")
