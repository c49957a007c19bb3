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
    for name in ("llama3-8b", "llama3-70b", "mistral-7b", "decode", "bloom", "documents",
                 "gemma2-9b", "gpt-oss-20b", "deepseek-v3-mla", "serving-decode",
                 "serving-mixed"):
        text = presets.note(name, {"cpu"})
        assert text.startswith("CPU sizes") and "minute" in text, name
        assert presets.note(name, {"cuda"}) == ""


def test_the_2026_presets_keep_their_model_cards_shapes_on_both_devices():
    """Gemma 2 9B: softcap 50, Hq 16, Hkv 8, D 256, a global and a windowed group; gpt-oss-20b:
    sinks, Hq 64, Hkv 8, D 64, a dense and a 128-token banded group; DeepSeek-V3 MLA: prefill
    D 192 / D_v 128 and absorbed decode D 576 / D_v 512 against one key/value head; serving:
    paged (16-token pages) ragged decode and mixed batches. The CPU keeps every shape."""
    for device in ("cuda", "cpu"):
        gemma = expand(presets.preset_groups("gemma2-9b", device), ["x"])
        assert {(p.heads, p.kv_heads, p.head_dim, p.value("softcap")) for p in gemma} == {
            (16, 8, 256, 50.0)}
        assert len({p.window for p in gemma}) == 2 and all(p.causal for p in gemma)
        oss = expand(presets.preset_groups("gpt-oss-20b", device), ["x"])
        assert {(p.heads, p.kv_heads, p.head_dim, p.value("sinks")) for p in oss} == {
            (64, 8, 64, True)}
        assert {p.window for p in oss} == {-1, 128}
        mla = expand(presets.preset_groups("deepseek-v3-mla", device), ["x"])
        assert {(p.heads, p.n_kv_heads, p.head_dim, p.value("head_dim_v"), p.n_queries == 1)
                for p in mla} == {(128, 128, 192, 128, False), (128, 1, 576, 512, True)}
        decode = expand(presets.preset_groups("serving-decode", device), ["x"])
        assert {(p.value("page_size"), p.n_queries) for p in decode} == {(16, 1)}
        assert all(p.value("lengths").startswith("uniform:") for p in decode)
        assert max(p.batch for p in decode) >= 16
        mixed = expand(presets.preset_groups("serving-mixed", device), ["x"])
        assert all("+mixed:" in p.value("lengths") and p.value("page_size") == 16
                   for p in mixed)
