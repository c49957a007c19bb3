"""harness.contract.precision reads torch's fp32_precision settings where torch has them, the
legacy TF32 getters otherwise, and never raises or warns: a setting it cannot read is recorded
as unknown with the reason (the read sits inside the timing of every torch record)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from harness.contract import precision


@pytest.fixture
def restore_torch_precision():
    """Undo what a test sets: the legacy settings, then the new ones (the legacy setters
    also write the new ones, so those go last)."""
    if not hasattr(torch.backends, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision settings (torch < 2.9)")
    b = torch.backends
    legacy = (torch.get_float32_matmul_precision(), b.cuda.matmul.allow_tf32,
              b.cudnn.allow_tf32)
    new = {name: precision._attribute(b, path) for name, path in precision.FP32_SETTINGS}
    yield
    torch.set_float32_matmul_precision(legacy[0])
    b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32 = legacy[1], legacy[2]
    for name, path in precision.FP32_SETTINGS:
        *parent, attr = path
        setattr(precision._attribute(b, tuple(parent)) if parent else b, attr, new[name])


def read_strictly(read):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read()


def test_the_new_setting_in_force_is_read_without_a_warning_or_an_error(restore_torch_precision):
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    # the legacy getters refuse a mixed state: what the record must survive
    with pytest.raises(RuntimeError):
        _ = torch.backends.cuda.matmul.allow_tf32
    p = read_strictly(precision.torch_precision)
    assert p["source"] == "fp32_precision"
    assert p["fp32_precision"]["cuda.matmul"] == "tf32"
    assert p["cuda_matmul_allow_tf32"] is True and p["cudnn_allow_tf32"] is False
    assert p["float32_matmul_precision"] == "high"       # what tf32 means in the legacy names
    json.dumps(p)                                         # goes into run.json as it is
    line = read_strictly(lambda: precision.describe("torch"))
    assert line.startswith("torch high (tf32 matmul on, cudnn off)")
    assert "unreadable" not in line
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert "tf32 matmul off" in read_strictly(lambda: precision.describe("torch"))


def test_none_inherits_from_the_backend_then_the_generic_setting():
    assert precision.effective("none", "none", "none") == "ieee"
    assert precision.effective("none", "none", "tf32") == "tf32"
    assert precision.effective("none", "ieee", "tf32") == "ieee"
    assert precision.effective("tf32", "ieee", "ieee") == "tf32"
    assert precision.effective(None, "none", "tf32") == "tf32"


def test_a_generic_setting_is_inherited_by_the_cuda_matmul(restore_torch_precision):
    torch.backends.cuda.matmul.fp32_precision = "none"
    torch.backends.cudnn.fp32_precision = "none"
    torch.backends.fp32_precision = "tf32"
    p = read_strictly(precision.torch_precision)
    assert p["cuda_matmul_allow_tf32"] is True


def legacy_torch(*, matmul="highest", allow_tf32=False, cudnn=True, broken=None):
    """A torch before 2.9: the legacy getters only; ``broken`` names one that raises."""
    class Matmul:
        @property
        def allow_tf32(self):
            if broken == "matmul":
                raise RuntimeError("cublas getter broke\nsecond line")
            return allow_tf32

    def get_precision():
        if broken == "name":
            raise RuntimeError("mixed legacy and new APIs")
        return matmul

    return SimpleNamespace(get_float32_matmul_precision=get_precision,
                           backends=SimpleNamespace(
                               cuda=SimpleNamespace(matmul=Matmul()),
                               cudnn=SimpleNamespace(allow_tf32=cudnn)))


def test_an_old_torch_is_read_through_the_legacy_getters():
    p = read_strictly(lambda: precision.torch_precision(legacy_torch(matmul="high",
                                                                     allow_tf32=True)))
    assert p == {"source": "legacy", "float32_matmul_precision": "high",
                 "cuda_matmul_allow_tf32": True, "cudnn_allow_tf32": True}


def test_a_getter_that_raises_is_unknown_with_its_reason():
    p = read_strictly(lambda: precision.torch_precision(legacy_torch(broken="matmul")))
    assert p["cuda_matmul_allow_tf32"] is None and p["cudnn_allow_tf32"] is True
    assert p["unreadable"] == {"cuda_matmul_allow_tf32": "RuntimeError: cublas getter broke"}
    p = read_strictly(lambda: precision.torch_precision(legacy_torch(broken="name")))
    assert p["float32_matmul_precision"] == "unknown"
    assert "mixed legacy" in p["unreadable"]["float32_matmul_precision"]


def test_a_new_setting_that_raises_is_unknown_and_the_rest_still_read():
    class Conv:
        @property
        def fp32_precision(self):
            raise RuntimeError("no such backend")

    fake = SimpleNamespace(
        get_float32_matmul_precision=lambda: "highest",
        backends=SimpleNamespace(fp32_precision="none",
                                 cuda=SimpleNamespace(matmul=SimpleNamespace(
                                     fp32_precision="none")),
                                 cudnn=SimpleNamespace(fp32_precision="none", conv=Conv())))
    p = read_strictly(lambda: precision.torch_precision(fake))
    assert p["cuda_matmul_allow_tf32"] is False and p["cudnn_allow_tf32"] is None
    assert p["unreadable"] == {"fp32_precision cudnn.conv": "RuntimeError: no such backend"}


def test_describe_never_raises(monkeypatch):
    def broken():
        raise ValueError("boom")
    monkeypatch.setattr(precision, "torch_precision", broken)
    assert read_strictly(lambda: precision.describe("torch")) == \
        "torch precision unknown (ValueError: boom)"
