"""The CPU picks of the workload presets (decode, bloom): shapes kept, sizes bounded, and
--dry-run says what the CPU run picks and roughly how long it takes."""

from __future__ import annotations

from harness.grid import presets
from harness.grid.spec import expand


def test_decode_cpu_keeps_the_llama3_decode_shape_and_drops_b4_at_16k():
    points = expand(presets.preset_groups("decode", "cpu"), ["x"])
    assert {(p.heads, p.kv_heads, p.head_dim, p.q_len, p.causal) for p in points} == {
        (32, 8, 128, 1, True)}
    assert {(p.batch, p.seq_len) for p in points} == {
        (1, 1024), (1, 4096), (1, 16384), (4, 1024), (4, 4096)}


def test_bloom_cpu_keeps_alibi_and_the_bloom_heads():
    points = expand(presets.preset_groups("bloom", "cpu"), ["x"])
    assert {(p.heads, p.kv_heads or p.heads, p.head_dim, p.alibi, p.causal)
            for p in points} == {(32, 32, 128, True, True)}
    assert max(p.seq_len for p in points) <= 1024


def test_every_workload_preset_says_its_cpu_picks_and_time():
    for name in ("llama3-8b", "llama3-70b", "mistral-7b", "decode", "bloom", "documents"):
        text = presets.note(name, {"cpu"})
        assert text.startswith("CPU sizes") and "minute" in text, name
        assert presets.note(name, {"cuda"}) == ""
