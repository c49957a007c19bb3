"""Issue 26, item 11: the sweep's parent process never starts a GPU runtime (no JAX backend, no
torch CUDA initialisation): planning, the default device, the static checks, the hardware
fingerprint and ``sweep --dry-run`` ask NVML. Checked in a fresh process that has a fake GPU
(a fake NVML with one device, torch claiming a CUDA build, a JAX CUDA plug-in) and whose
framework calls that would start a runtime are recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax", reason="jax is not installed")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys, types
calls = []

def record(name, result=None, error=None):
    def fake(*args, **kwargs):
        calls.append(name)
        if error is not None:
            raise error
        return result
    return fake

nvml = types.SimpleNamespace(
    nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
    nvmlDeviceGetHandleByIndex=lambda i: i,
    nvmlDeviceGetUUID=lambda h: b"GPU-aaaaaaaa-0000-0000-0000-000000000000",
    nvmlDeviceGetName=lambda h: b"NVIDIA H200",
    nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=141 * 2 ** 30),
    nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId="00000000:01:00.0"),
    nvmlDeviceGetClockInfo=lambda h, k: 1980, nvmlDeviceGetMaxClockInfo=lambda h, k: 1980,
    nvmlDeviceGetTemperature=lambda h, k: 40, nvmlDeviceGetPowerUsage=lambda h: 100000,
    nvmlSystemGetDriverVersion=lambda: b"580.00", nvmlSystemGetCudaDriverVersion=lambda: 13000,
    NVML_CLOCK_SM=0, NVML_CLOCK_MEM=1, NVML_TEMPERATURE_GPU=0, NVMLError=Exception)
sys.modules["pynvml"] = nvml

import torch
torch.backends.cuda.is_built = lambda: True
for name in ("init", "_lazy_init", "is_available", "device_count", "current_device",
             "get_device_properties", "get_device_name", "get_device_capability",
             "mem_get_info", "set_device", "synchronize"):
    setattr(torch.cuda, name, record(f"torch.cuda.{name}", error=RuntimeError(name)))
for name in ("_cuda_init", "_cuda_getDeviceCount"):
    setattr(torch._C, name, record(f"torch._C.{name}", error=RuntimeError(name)))
torch.backends.cudnn.version = lambda: 91000

import jax
from jax._src import xla_bridge
for name in ("devices", "local_devices", "device_count", "default_backend"):
    setattr(jax, name, record(f"jax.{name}", error=RuntimeError(name)))
for name in ("backends", "get_backend", "devices", "local_devices"):
    setattr(xla_bridge, name, record(f"xla_bridge.{name}", error=RuntimeError(name)))

from harness.contract.frameworks import jax_fw
jax_fw.cuda_plugin_installed = lambda: True

import implementations  # noqa: F401
from harness.cli import main
from harness.contract.frameworks import best_device
from harness.contract.registry import REGISTRY, static_check
from harness.grid.plan import SweepRequest, plan
from harness.store.hardware import fingerprint

out = {"best_device": best_device()}
planned = plan(SweepRequest(impl="softmax_jax", seq_len="1024,2048"))
out["devices"] = sorted({p.device for p in planned.points})
mixed = plan(SweepRequest(impl="softmax_jax,softmax_torch", device="cuda", seq_len="1024"))
out["static"] = [static_check(REGISTRY.get(p.impl), p) for p in mixed.points]
out["missing"] = static_check(REGISTRY.get("softmax_jax"),
                              plan(SweepRequest(impl="softmax_jax", device="cuda:3",
                                                seq_len="1024"), check_devices=False).points[0])
machine = fingerprint()
out["cuda"] = machine["cuda"]
out["dry_run"] = main(["sweep", "--dry-run", "--impl", "softmax_jax", "--device", "cuda",
                       "--seq-len", "1024"])
out["calls"] = calls
out["jax_backends"] = sorted(getattr(xla_bridge, "_backends", {}) or {})
out["torch_cuda_initialized"] = bool(torch.cuda.is_initialized())
print("RESULT" + json.dumps(out))
"""


def test_the_parent_starts_no_gpu_runtime(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env={**__import__("os").environ, "JAX_PLATFORMS": ""})
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(line[len("RESULT"):])
    assert out["calls"] == [] and out["jax_backends"] == []
    assert out["torch_cuda_initialized"] is False
    assert out["best_device"] == "cuda" and out["devices"] == ["cuda"]
    assert out["static"] and all(reason is None for reason in out["static"])
    assert "no device cuda:3" in out["missing"]
    assert out["cuda"]["cuda_available"] is True and out["cuda"]["devices"] == ["NVIDIA H200"]
    assert out["dry_run"] == 0


def test_jax_presence_reasons_without_a_backend(monkeypatch):
    from harness.contract import visible_gpus
    from harness.contract.frameworks import jax_fw

    monkeypatch.setattr(jax_fw, "backends_started", lambda: False)
    monkeypatch.setattr(jax_fw, "cuda_plugin_installed", lambda: True)
    monkeypatch.setattr(visible_gpus, "cuda_device_count", lambda: 1)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert "JAX_PLATFORMS=cpu" in jax_fw.device_present("cuda").reason
    monkeypatch.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert jax_fw.device_present("cuda") and not jax_fw.device_present("cuda:1")
    monkeypatch.setattr(jax_fw, "cuda_plugin_installed", lambda: False)
    assert "no CUDA plug-in" in jax_fw.device_present("cuda").reason


def test_torch_presence_counts_by_nvml(monkeypatch):
    import torch

    from harness.contract import visible_gpus
    from harness.contract.frameworks import torch_fw

    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(visible_gpus, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("CUDA runtime asked"))
    assert torch_fw.device_present("cuda:1") and not torch_fw.device_present("cuda:2")
    # without NVML: torch's NVML-based check, never the runtime's
    monkeypatch.setattr(visible_gpus, "cuda_device_count", lambda: None)
    seen = []

    def nvml_based():
        seen.append(__import__("os").environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"))
        return False

    monkeypatch.setattr(torch.cuda, "is_available", nvml_based)
    assert not torch_fw.device_present("cuda") and seen == ["1"]
