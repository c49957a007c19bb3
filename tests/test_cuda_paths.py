"""The CUDA paths' logic, checked on the CPU: monkeypatched torch.cuda functions, a fake NVML,
JAX's emulated host devices. tests/test_gpu.py checks the same on a real GPU."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from harness.measure import device_setup, worker
from harness.measure import timers as gpu_timing
from harness.store import hardware
from harness.contract.frameworks import torch_fw
from harness.grid.settings import TimingSettings
from harness.contract.records import Point

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3
L2 = 50 * 1024 * 1024          # an H100 SXM's L2
TOTAL = 80 * GIB


class FakeCuda:
    """Records what the worker asks of torch.cuda; refuses what torch itself refuses."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fractions: list[tuple[float, object]] = []
        self.current: list[int] = []
        self.scopes: list[int] = []
        props = types.SimpleNamespace(total_memory=TOTAL, L2_cache_size=L2)

        def set_fraction(fraction, device=None):
            # torch.cuda.memory.set_per_process_memory_fraction's own checks, unchanged
            index = torch.cuda._utils._get_device_index(device)
            if not isinstance(fraction, float):
                raise TypeError("Invalid type for fraction argument, must be `float`")
            self.fractions.append((fraction, index))

        @contextlib.contextmanager
        def device(index):
            self.scopes.append(index)
            yield

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=None: props)
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", set_fraction)
        monkeypatch.setattr(torch.cuda, "set_device", self.current.append)
        monkeypatch.setattr(torch.cuda, "device", device)


@pytest.fixture
def cuda(monkeypatch):
    return FakeCuda(monkeypatch)


@pytest.fixture
def clean_jax_env(monkeypatch):
    for name in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
        monkeypatch.delenv(name, raising=False)


# ---- finding 1: --max-memory on device "cuda"; JAX's own fraction ---------------------------

def test_torch_refuses_a_device_string_without_index():
    """What the old call did: torch's _get_device_index('cuda') raises (torch/cuda/_utils.py)."""
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda._utils._get_device_index("cuda")


@pytest.mark.parametrize("device,index", [("cuda", 0), ("cuda:1", 1)])
def test_torch_cap_gets_an_int_index(cuda, device, index):
    device_setup.cap_cuda_allocator(device, max_bytes=8 * GIB, default_fraction=0.9)
    assert cuda.fractions == [(pytest.approx(0.1), index)]


def test_jax_point_sets_jax_fraction_and_never_touches_torch_cuda(cuda, clean_jax_env,
                                                                  monkeypatch):
    monkeypatch.setattr(hardware, "cuda_device_total_bytes",
                        lambda index: TOTAL if index == 1 else None)
    worker.prepare(worker.WorkerContext(max_memory_bytes=8 * GIB), "cuda:1", "jax")
    assert os.environ["XLA_CLIENT_MEM_FRACTION"] == "0.100000"
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ  # jaxlib refuses both at once
    assert cuda.fractions == [] and cuda.current == []


def test_jax_fraction_keeps_the_deprecated_name_when_the_user_set_it(cuda, clean_jax_env,
                                                                      monkeypatch):
    monkeypatch.setattr(hardware, "cuda_device_total_bytes", lambda index: TOTAL)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    device_setup.cap_jax_memory("cuda", max_bytes=4 * GIB, default_fraction=0.9)
    assert os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.050000"
    assert "XLA_CLIENT_MEM_FRACTION" not in os.environ


# ---- issue 26, item 9: one GPU memory cap for every framework ----------------------------

@pytest.mark.parametrize("max_memory", [None, 8 * GIB])
def test_both_frameworks_get_the_same_cap(cuda, clean_jax_env, monkeypatch, max_memory):
    """Without --max-memory JAX's allocator would stop at 75% and torch's at none: the worker
    gives both the same fraction of the device (and --max-memory, when given, to both)."""
    monkeypatch.setattr(hardware, "cuda_device_total_bytes", lambda index: TOTAL)
    context = worker.WorkerContext(max_memory_bytes=max_memory)
    torch_cap = worker.prepare(context, "cuda", "torch")
    jax_cap = worker.prepare(context, "cuda", "jax")
    expected = 0.9 if max_memory is None else 0.1
    assert context.device_memory_fraction == 0.9
    assert cuda.fractions == [(pytest.approx(expected), 0)]
    assert float(os.environ["XLA_CLIENT_MEM_FRACTION"]) == pytest.approx(expected)
    assert torch_cap == jax_cap
    assert torch_cap.as_note() == {"bytes": int(TOTAL * expected) if max_memory is None
                                   else max_memory, "fraction": pytest.approx(expected),
                                   "source": "default" if max_memory is None
                                   else "--max-memory"}


def test_memory_cap_arithmetic():
    cap = device_setup.memory_cap(100 * GIB, None, GIB, 0.9)
    assert (cap.cap_bytes, cap.source) == (91 * GIB, "default")
    assert cap.fraction == pytest.approx(0.91)
    assert device_setup.memory_cap(100 * GIB, 200 * GIB, 0, 0.9).fraction == 1.0
    unknown = device_setup.memory_cap(None, None, GIB, 0.9)
    assert (unknown.fraction, unknown.cap_bytes) == (0.9, None)


def test_jax_gets_the_default_fraction_when_the_total_is_unknown(clean_jax_env, monkeypatch):
    """Without NVML the JAX worker never asks torch (that would start a torch CUDA context
    beside JAX's): the default fraction alone, and --max-memory recorded as not applied."""
    asked = []
    monkeypatch.setattr(hardware, "cuda_device_total_bytes", lambda index: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=None: asked.append(index) or (_ for _ in ()).throw(
                            RuntimeError("no CUDA")))
    cap = device_setup.cap_jax_memory("cuda", max_bytes=None, default_fraction=0.9)
    assert os.environ["XLA_CLIENT_MEM_FRACTION"] == "0.900000" and cap.source == "default"
    capped = device_setup.cap_jax_memory("cuda", max_bytes=GIB, default_fraction=0.9)
    assert capped.cap_bytes is None and capped.source == "default" and asked == []


def test_the_memory_pass_records_the_cap(cuda, clean_jax_env, monkeypatch):
    """The record says the cap its worker had, on an error record too (no real CUDA here)."""
    monkeypatch.setattr(hardware, "cuda_device_total_bytes", lambda index: TOTAL)
    point = Point("softmax_torch", seq_len=64, head_dim=16, device="cuda")
    result = worker.memory_task(point, worker.WorkerContext())
    assert result.device_memory_cap == {"bytes": int(TOTAL * 0.9), "fraction": 0.9,
                                        "source": "default"}
    from harness.contract.records import Measurement

    _, notes = Measurement(result).record_values()
    assert notes["device_memory_cap"]["source"] == "default"


def test_run_settings_record_the_default_fraction():
    from harness.grid.settings import RunSettings

    settings = RunSettings()
    assert settings.as_dict()["device_memory_fraction"] == 0.9
    assert settings.worker_context().device_memory_fraction == 0.9


def test_jax_reads_the_fraction_variables_it_is_given():
    """jaxlib's generate_pjrt_gpu_plugin_options: the names the worker sets are the ones read."""
    xla_client = pytest.importorskip("jaxlib.xla_client")
    env = {"XLA_CLIENT_MEM_FRACTION": "0.25"}
    with _environ(env):
        assert xla_client.generate_pjrt_gpu_plugin_options()["memory_fraction"] == 0.25
    with _environ({**env, "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"}):
        with pytest.raises(ValueError):
            xla_client.generate_pjrt_gpu_plugin_options()


@contextlib.contextmanager
def _environ(values):
    saved = {k: os.environ.get(k) for k in ("XLA_CLIENT_MEM_FRACTION",
                                             "XLA_PYTHON_CLIENT_MEM_FRACTION")}
    for k in saved:
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


# ---- findings 2 and 7: the L2-flush buffer inside the cap; the point's device is current ---

def test_flush_buffer_is_twice_the_l2_and_the_timing_cap_makes_room_for_it(cuda):
    assert torch_fw.l2_flush_bytes("cuda:1") == 2 * L2
    context = worker.WorkerContext(max_memory_bytes=8 * GIB)
    point = Point("softmax_torch", seq_len=64, head_dim=16, device="cuda:1")
    memory = worker.memory_task(point, context)           # fails later: no real CUDA here
    timing = worker.timing_task(point, TimingSettings(), context)
    no_flush = worker.timing_task(point, TimingSettings(cuda_flush_l2=False), context)
    assert memory.status == timing.status == "error"
    (mem_frac, i1), (time_frac, i2), (plain_frac, i3) = cuda.fractions
    assert (i1, i2, i3) == (1, 1, 1)
    assert mem_frac * TOTAL == pytest.approx(8 * GIB)
    assert time_frac * TOTAL == pytest.approx(8 * GIB + 2 * L2)
    assert plain_frac == mem_frac
    assert cuda.current == [1, 1, 1]                        # torch.cuda.set_device(1) each time


def test_flush_buffer_size_when_torch_reports_no_l2(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=None: types.SimpleNamespace(L2_cache_size=0))
    assert torch_fw.l2_flush_bytes("cuda") == torch_fw.L2_FLUSH_FALLBACK_BYTES


def test_event_timer_allocates_the_sized_flush_buffer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=None: types.SimpleNamespace(L2_cache_size=1 << 20))
    timer = gpu_timing.CudaEventTimer("cpu", flush_l2=True)  # the buffer's size, on the CPU
    assert timer.flush.numel() == 2 << 20


def test_cpu_points_keep_the_address_space_cap(cuda, monkeypatch):
    capped = []
    monkeypatch.setattr(worker, "cap_address_space", capped.append)
    worker.prepare(worker.WorkerContext(max_memory_bytes=GIB), "cpu", "torch",
                   extra_device_bytes=123)
    assert capped == [GIB] and cuda.fractions == [] and cuda.current == []


def test_probe_runs_each_torch_cuda_combination_on_its_device(cuda):
    with device_setup.device_scope("torch", "cuda:1"):
        pass
    with device_setup.device_scope("jax", "cuda:1"):
        pass
    with device_setup.device_scope("torch", "cpu"):
        pass
    assert cuda.scopes == [1]


# ---- finding 3: the memory pass warms up before resetting the peak ---------------------------

class FakeAllocator:
    """torch.cuda's allocator counters; the first call allocates a workspace that stays."""

    def __init__(self, monkeypatch, workspace: int, transient: int) -> None:
        self.allocated = 1000   # the inputs
        self.peak = self.allocated
        self.calls = 0
        self.workspace, self.transient = workspace, transient
        monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)

    def reset(self, device=None):
        self.peak = self.allocated

    def run(self):
        if self.calls == 0:
            self.allocated += self.workspace        # cuBLAS's workspace: kept by the allocator
        self.calls += 1
        self.peak = max(self.peak, self.allocated + self.transient)
        return "out"


def test_memory_pass_does_not_count_the_first_calls_workspace(monkeypatch):
    alloc = FakeAllocator(monkeypatch, workspace=32 << 20, transient=5000)
    work = types.SimpleNamespace(setup=lambda: None, run=alloc.run)
    peak, method = torch_fw.device_peak_bytes(work, "cuda")
    assert alloc.calls == 2 and method == "cuda_allocator_peak_above_inputs"
    assert peak == 5000                       # not 32 MiB + 5000


# ---- finding 9: a sticky CUDA error ends the probe worker ------------------------------------

def test_cuda_context_error_reports_a_broken_context(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)

    def broken(device=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
    monkeypatch.setattr(torch.cuda, "synchronize", broken)
    message = device_setup.cuda_context_error("torch", "cuda:1")
    assert message == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert device_setup.cuda_context_error("jax", "cuda:1") is None
    assert device_setup.cuda_context_error("torch", "cpu") is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert device_setup.cuda_context_error("torch", "cuda") is None  # CUDA never used here


def test_probe_worker_ends_after_a_combination_breaks_the_context(monkeypatch):
    seen = []

    def context_error(framework, device):
        seen.append(device)
        return "RuntimeError: CUDA error: device-side assert triggered" if len(seen) == 1 \
            else None
    monkeypatch.setattr(worker, "cuda_context_error", context_error)
    combos = [("softmax_torch", "cpu", "float32", False), ("sdpa_math", "cpu", "float32", False)]
    with pytest.raises(worker.CudaContextError, match="softmax_torch on cpu/float32 left the "
                                                      "CUDA context unusable: .*device-side"):
        worker.probe_task(combos, worker.WorkerContext())
    assert seen == ["cpu"]                    # the second combination never ran in this worker
    seen.append("x")                          # from now on the context is fine
    assert set(worker.probe_task(combos, worker.WorkerContext())) == set(combos)


def test_runner_isolates_the_combination_that_broke_the_context(tmp_path):
    """The runner's answer to a probe worker that raised: each combination alone."""
    from harness.contract.probe import ProbeResult
    from harness.measure.processes import Outcome
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    class Executor:
        def __init__(self):
            self.calls = []

        def run(self, task, combos, context, timeout=None):
            self.calls.append(list(combos))
            if len(combos) > 1 or combos[0][0] == "softmax_torch":
                return Outcome("error", message="worker raised CudaContextError: bad on cuda/"
                                                "float16 left the CUDA context unusable")
            return Outcome("ok", result={combos[0]: ProbeResult(True)})

    runner = Runner(RunDir.create(tmp_path / "run", {}), RunSettings(), executor=Executor())
    points = [Point(name, seq_len=64, head_dim=16, device="cuda", dtype="float16")
              for name in ("softmax_torch", "sdpa_math")]  # the first one "breaks" the context
    probes = runner.probe(points)
    assert probes[("sdpa_math", "cuda", "float16", False)].available
    bad = probes[("softmax_torch", "cuda", "float16", False)]
    assert not bad and bad.crashed and bad.status == "error"
    assert "CudaContextError" in bad.reason


# ---- finding 12: NVML in CUDA's order, matched by UUID; one bad GPU does not abort ------------

class NVMLError(Exception):
    pass


def fake_nvml(broken_handle: int | None = None, broken_name: int | None = None):
    uuids = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-1111-1111-1111-111111111111"]
    totals = [80 * GIB, 141 * GIB]
    names = [b"NVIDIA H100 80GB HBM3", b"NVIDIA H200"]

    def handle(index):
        if index == broken_handle:
            raise NVMLError("Unknown Error")
        return index

    def name(h):
        if h == broken_name:
            raise NVMLError("GPU is lost")
        return names[h]

    return types.SimpleNamespace(
        NVMLError=NVMLError, NVML_CLOCK_SM=0, NVML_CLOCK_MEM=1, NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=handle, nvmlDeviceGetUUID=lambda h: uuids[h].encode(),
        nvmlDeviceGetName=name,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=totals[h]),
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId=f"00000000:{h + 1:02x}:00.0"),
        nvmlDeviceGetClockInfo=lambda h, kind: 1980, nvmlDeviceGetMaxClockInfo=lambda h, k: 1980,
        nvmlDeviceGetTemperature=lambda h, kind: 40, nvmlDeviceGetPowerUsage=lambda h: 100000,
        nvmlSystemGetDriverVersion=lambda: b"570.00", nvmlSystemGetCudaDriverVersion=lambda: 12080)


@pytest.fixture
def nvml(monkeypatch):
    def install(torch_uuids=None, **kwargs):
        monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(**kwargs))
        monkeypatch.setattr(hardware, "torch_cuda_uuids", lambda: torch_uuids)
    return install


@pytest.mark.parametrize("visible", ["1", "GPU-bbbb", "GPU-bbbbbbbb-1111-1111-1111-111111111111"])
def test_nvml_lists_the_visible_gpu_as_cuda_0(nvml, monkeypatch, visible):
    nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    info = hardware.gpu_info()
    assert info["nvml"] == "ok" and info["gpus_not_visible"] == 1
    (gpu,) = info["gpus"]
    assert gpu["index"] == 0 and gpu["nvml_index"] == 1 and gpu["name"] == "NVIDIA H200"
    assert gpu["uuid"].startswith("GPU-bbbb") and gpu["pci_bus_id"] == "00000000:02:00.0"
    assert hardware.cuda_device_total_bytes(0) == 141 * GIB
    assert hardware.hardware_tag({"gpu": info}) == "h200"


def test_nvml_order_follows_cuda(nvml, monkeypatch):
    nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    assert [g["nvml_index"] for g in hardware.gpu_info()["gpus"]] == [1, 0]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    info = hardware.gpu_info()
    assert [g["nvml_index"] for g in info["gpus"]] == [0, 1] and info["cuda_order"] == "all"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,0")        # CUDA then sees nothing
    assert hardware.gpu_info()["gpus"] == []


def test_nvml_matches_torch_uuids_first(nvml, monkeypatch):
    # torch's device properties give the UUID without NVML's "GPU-" prefix
    nvml(torch_uuids=["bbbbbbbb-1111-1111-1111-111111111111"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")          # ignored when torch can tell
    info = hardware.gpu_info()
    assert [g["nvml_index"] for g in info["gpus"]] == [1] and info["cuda_order"] == "uuid"


def test_one_failing_nvml_handle_does_not_abort_the_fingerprint(nvml, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml(broken_handle=0, broken_name=1)
    info = hardware.gpu_info()
    assert info["nvml"] == "ok" and len(info["gpus"]) == 2
    assert "nvml_error" in info["gpus"][0] and info["gpus"][0]["uuid"] is None
    assert info["gpus"][1]["name"] is None and info["gpus"][1]["memory_total_bytes"] == 141 * GIB


# ---- findings 4 and 5: JAX on the requested device; float32 matmuls at HIGHEST -------------

JAX_DEVICES_SCRIPT = r"""
import json
from dataclasses import replace
import jax
from harness import get
from harness.contract.frameworks import jax_fw
from harness.contract.records import Point
import implementations  # noqa: F401  (registers softmax_jax)
out = {}
for device in ("cpu", "cpu:1"):
    for pass_ in ("forward", "forward_backward", "backward"):
        point = Point("softmax_jax", seq_len=16, head_dim=8, heads=2, device=device, pass_=pass_)
        work = jax_fw.make_workload(get("softmax_jax"), point)
        work.setup()
        value = work.run()
        leaves = jax.tree_util.tree_leaves(value)
        out[f"{device} {pass_}"] = sorted({d.id for leaf in leaves for d in leaf.devices()} |
                                          {d.id for x in work.inputs for d in x.devices()})
print(json.dumps(out))
"""


def test_jax_inputs_and_outputs_stay_on_the_requested_emulated_device():
    pytest.importorskip("jax")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", JAX_DEVICES_SCRIPT], capture_output=True,
                            text=True, env=env, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    devices = json.loads(result.stdout.strip().splitlines()[-1])
    for key, ids in devices.items():
        assert ids == ([1] if key.startswith("cpu:1") else [0]), (key, ids)


@pytest.mark.parametrize("name", ["softmax_jax", "hrr_jax"])
def test_jax_float32_matmuls_ask_for_highest_precision(name):
    """DEFAULT precision is TF32 on Ampere+ GPUs; every float32 dot must say HIGHEST."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import harness

    impl = harness.get(name)
    counted = 0
    for dtype, wanted in ((jnp.float32, "HIGHEST"), (jnp.bfloat16, None)):
        q = jnp.ones((1, 2, 8, 16), dtype)
        text = jax.jit(lambda a, b, c: impl.fn(a, b, c)).lower(q, q, q).as_text()
        dots = [line for line in text.splitlines() if "dot_general" in line]
        counted += len(dots)
        if wanted:
            assert all(f"precision = [{wanted}, {wanted}]" in line for line in dots), dots
        else:  # bf16 operands (hrr_jax computes in float32 at HIGHEST; softmax_jax in bf16)
            assert not any("HIGHEST" in line for line in dots if "bf16>," in line), dots
    assert counted > 0      # both use matmuls at D=16 (hrr_jax: its GEMM formulation)


# ---- finding 10: kernel limits are "unsupported" with the reason; list per dtype --------------

def test_sdpa_without_a_kernel_is_unsupported_on_the_cpu_too():
    from harness.errors import UnsupportedError
    from implementations import sdpa

    q = torch.randn(1, 2, 16, 16)
    with pytest.raises(UnsupportedError, match="SDPBackend.EFFICIENT_ATTENTION has no kernel "
                                               r"for this input \(1x2x16x16, float32, cpu\)"):
        sdpa.sdpa_attention(q, q, q, backend="EFFICIENT_ATTENTION")


def cuda_select_backend_failure(q, k, v, **kwargs):
    """What torch's CUDA select_sdp_backend does for D = 512 with only FLASH allowed."""
    import warnings

    for message in ("Memory efficient kernel not used because:",
                    "Mem efficient attention requires last dimension of inputs to be <= 256",
                    "Flash attention kernel not used because:",
                    "Flash attention requires q,k,v to have the same last dimension and to be "
                    "less than or equal to 256. Got Query.size(-1): 512, Key.size(-1): 512, "
                    "Value.size(-1): 512 instead. (Triggered internally at sdp_utils.cpp:123.)",
                    "CuDNN attention kernel not used because:",
                    "cuDNN requires head dim <= 128"):
        warnings.warn(message, UserWarning)
    raise RuntimeError("No available kernel. Aborting execution.")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sdpa_reasons_are_those_of_the_pinned_backend(monkeypatch):
    import torch.nn.functional as F

    from harness.errors import UnsupportedError
    from implementations import sdpa

    monkeypatch.setattr(F, "scaled_dot_product_attention", cuda_select_backend_failure)
    q = torch.randn(1, 1, 4, 512, dtype=torch.float16)
    with pytest.raises(UnsupportedError) as info:
        sdpa.sdpa_attention(q, q, q, backend="FLASH_ATTENTION")
    message = str(info.value)
    assert "Flash attention requires q,k,v to have the same last dimension" in message
    assert "Got Query.size(-1): 512" in message and "Triggered" not in message
    assert "Mem efficient" not in message and "cuDNN requires" not in message
    with pytest.raises(UnsupportedError, match="cuDNN requires head dim <= 128"):
        sdpa.sdpa_attention(q, q, q, backend="CUDNN_ATTENTION")


def test_other_runtime_errors_are_not_hidden(monkeypatch):
    import torch.nn.functional as F

    from implementations import sdpa

    def fails(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(F, "scaled_dot_product_attention", fails)
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        sdpa.sdpa_attention(q, q, q, backend="FLASH_ATTENTION")


def test_runner_records_a_missing_kernel_as_unsupported():
    from implementations import sdpa

    exc = None
    try:
        sdpa.sdpa_attention(*(torch.randn(1, 1, 4, 8),) * 3, backend="CUDNN_ATTENTION")
    except Exception as caught:  # noqa: BLE001
        exc = caught
    status, message = worker.classify(exc, "torch")
    assert status == "unsupported" and "CUDNN_ATTENTION has no kernel" in message


def test_flash_attn_refuses_head_dims_over_256_before_calling_the_package(monkeypatch):
    from harness.errors import UnsupportedError
    from implementations import flash_attn

    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(
        flash_attn_func=lambda *a, **k: pytest.fail("called with an unsupported head dim")))
    q = torch.zeros(1, 1, 4, 512)
    with pytest.raises(UnsupportedError, match="head dim 512 > 256"):
        flash_attn.flash_attn(q, q, q)


def test_list_reports_the_dtypes_that_run():
    from harness.commands.list_impls import device_availability
    from harness.contract.registry import Availability

    def supports(device, dtype):
        if dtype in ("float16", "bfloat16"):
            return Availability(True)
        return Availability(False, f"flash: the CUDA flash kernel needs float16/bfloat16, "
                                   f"not {dtype}")
    impl = types.SimpleNamespace(
        capabilities=types.SimpleNamespace(dtypes=("float64", "float32", "float16", "bfloat16")),
        supports=lambda device, dtype: supports(device, dtype))
    got = device_availability(impl, "cuda")
    assert got["available"] and got["dtypes"] == ["float16", "bfloat16"]
    assert got["reason"].endswith("not float64")
    assert got["by_dtype"]["float32"]["available"] is False


def test_jax_cap_sizes_the_fraction_without_touching_torch_cuda(nvml, monkeypatch):
    nvml()
    monkeypatch.setattr(hardware, "torch_cuda_uuids",
                        lambda: pytest.fail("torch's CUDA initialised in a JAX worker"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert hardware.cuda_device_total_bytes(0) == 141 * GIB


def test_jax_timing_cap_makes_room_for_its_flush_buffer():
    from harness.contract.frameworks import jax_fw

    settings = TimingSettings()
    assert worker.harness_device_bytes(jax_fw, "cuda", settings) == jax_fw.JAX_FLUSH_BYTES
    assert worker.harness_device_bytes(jax_fw, "cpu", settings) == 0


def test_a_jax_probe_in_the_measuring_worker_runs_under_the_cap(clean_jax_env, monkeypatch):
    """A reused GPU worker probes its combination before its first point (the runner's
    _probe_in_worker, the same worker key). JAX reads its memory fraction once, when its GPU
    backend starts, and the probe's tiny run starts it: the fraction must be set before the
    probe runs, or the worker stays at JAX's default 75% while its records say 90%."""
    from harness.contract.probe import ProbeResult

    monkeypatch.setattr(hardware, "cuda_device_total_bytes", lambda index: TOTAL)
    seen = []

    def fake_probe(impl, **kwargs):
        seen.append(os.environ.get("XLA_CLIENT_MEM_FRACTION"))
        return ProbeResult(False, "fake probe")

    monkeypatch.setattr(worker, "probe_here", fake_probe)
    worker.probe_task([("softmax_jax", "cuda", "float32", False)], worker.WorkerContext())
    expected = worker.WorkerContext().device_memory_fraction + \
        worker.harness_device_bytes(worker.frameworks.get("jax"), "cuda",
                                    TimingSettings()) / TOTAL
    assert seen and seen[0] is not None
    assert float(seen[0]) == pytest.approx(expected, abs=1e-6)
