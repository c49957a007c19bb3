"""The report's decode figure and the labels of figures whose query length is fixed."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from matplotlib.collections import PolyCollection  # noqa: E402

from harness.contract.records import Point, SpeedRecord
from harness.report import figures, style  # noqa: E402
from harness.report.data import tidy_speed  # noqa: E402


def decode_frame():
    rows = []
    for batch in (1, 4):
        for seq_len in (1024, 4096):
            point = dict(heads=32, kv_heads=8, q_len=1, causal=True, batch=batch)
            samples = [seq_len * 1e-6 * f for f in (0.9, 1.0, 1.1)]
            rows.append(SpeedRecord.for_point(
                Point("sdpa_math", seq_len, 128, **point), framework="torch", family="exact",
                status="ok", time_s=samples[1], time_samples_s=samples).to_json())
            rows.append(SpeedRecord.for_point(
                Point("hrr_torch", seq_len, 128, **point), framework="torch", family="hrr",
                status="unsupported", message="Tq != Tk").to_json())
            status = "ok" if seq_len == 1024 else "timeout"
            rows.append(SpeedRecord.for_point(
                Point("softmax_torch", seq_len, 128, **point), framework="torch",
                family="exact", status=status,
                time_s=2e-3 if status == "ok" else None).to_json())
    return tidy_speed([{**r, "run": "r", "hardware_tag": "h"} for r in rows])


def note_text(fig) -> str:
    return " ".join(t.get_text() for t in fig.texts)


def test_decode_figure_panels_bands_failures_and_missing_methods():
    frame = decode_frame()
    impls = ["softmax_torch", "sdpa_math", "hrr_torch"]
    fig = figures.decode_figure(frame, impls, style.looks_for(impls), "cpu float32 Hq=32 Hkv=8")
    assert fig is not None
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["B=1", "B=4"]
    assert axes[0].get_xlabel() == "KV cache length (keys)"
    # one line per method that ran, an interquartile band where samples exist
    assert {line.get_label() for line in axes[0].get_lines()} == {"softmax_torch", "sdpa_math"}
    assert any(isinstance(c, PolyCollection) for c in axes[0].collections)
    # the timeout is lettered at the top of each panel, hrr_torch is named as unsupported
    assert [t.get_text() for t in axes[1].texts] == ["T"]
    text = note_text(fig)
    assert "not plotted (unsupported: hrr_torch)" in text
    assert "KV length" in text and "cpu float32 Hq=32 Hkv=8" in text
    figures.plt.close(fig)


def test_time_figure_x_label_says_key_value_length_when_queries_are_fixed():
    frame = decode_frame()
    impls = ["softmax_torch", "sdpa_math"]
    fig = figures.time_figure(frame[frame["batch"] == 1], impls, style.looks_for(impls))
    assert fig.get_axes()[0].get_xlabel() == figures.KV_XLABEL
    figures.plt.close(fig)
    square = frame.assign(q_axis=0)
    fig = figures.time_figure(square[square["batch"] == 1], impls, style.looks_for(impls))
    assert fig.get_axes()[0].get_xlabel() == figures.SEQ_XLABEL
    figures.plt.close(fig)


def test_tflops_note_states_the_mask_aware_flop_convention():
    assert "allowed query-key pairs" in figures.FLOP_CONVENTION
    assert "halved" not in figures.FLOP_CONVENTION


def test_decode_figure_adds_the_achieved_bandwidth_against_the_memory_peak():
    """Decode is bandwidth-bound: a second row plots each point's bytes moved per second, with
    the machine's measured memory peak drawn and named."""
    frame = decode_frame()
    ok = frame["status"] == "ok"
    frame.loc[ok, "achieved_bytes_per_s"] = frame.loc[ok, "seq_len"] * 1e6
    impls = ["softmax_torch", "sdpa_math", "hrr_torch"]
    fig = figures.decode_figure(frame, impls, style.looks_for(impls), "t", bandwidth=20e9)
    axes = fig.get_axes()
    assert len(axes) == 4                                   # time and bandwidth, B=1 and B=4
    bottom = axes[2]
    assert bottom.get_ylabel() == "bandwidth (GB/s)"
    assert bottom.get_xlabel() == "KV cache length (keys)"
    data = [line for line in bottom.get_lines() if max(line.get_xdata()) > 100]   # not the peak
    assert len(data) == 2 and max(max(line.get_ydata()) for line in data) == 4096 * 1e6 / 1e9
    assert any("memory peak 20 GB/s" in t.get_text() for t in bottom.texts)
    assert any(line.get_ydata()[0] == 20 for line in axes[3].get_lines())   # the peak, B=4
    assert axes[0].get_xlabel() == ""                       # the x label on the bottom row
    figures.plt.close(fig)
