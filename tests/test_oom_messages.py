"""is_oom of both adapters: allocation failures, however the library words them, are "oom"
(the runner stops growing T); a per-kernel resource limit (Triton's shared memory) is not."""

from __future__ import annotations

import pytest
import torch

from harness.contract.frameworks import jax_fw, oom, torch_fw
from harness.errors import UnsupportedError
from harness.measure.worker import classify

# messages as torch, the CUDA runtime and the CUDA libraries raise them (RuntimeError)
ALLOCATION_FAILURES = [
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasLtMatmul( ltHandle, ...)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "cuFFT error: CUFFT_ALLOC_FAILED",
    "cusolver error: CUSOLVER_STATUS_ALLOC_FAILED, when calling `cusolverDnCreate(handle)`",
    "CUSPARSE_STATUS_ALLOC_FAILED when calling cusparseCreate",
    "CURAND_STATUS_ALLOCATION_FAILED",
    "CUDA driver error: CUDA_ERROR_OUT_OF_MEMORY",
    "cudaErrorMemoryAllocation: out of memory",
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you "
    "tried to allocate 68719476736 bytes.",
    "[enforce fail at alloc_cpu.cpp:83] err == 0. DefaultCPUAllocator: can't allocate memory",
]
NOT_OOM = [
    "out of resource: shared memory, Required: 262144, Hardware limit: 232448. Reducing block "
    "sizes or `num_stages` may help.",
    "out of resource: registers",
    "CUDA error: too many resources requested for launch",
    "CUDA error: an illegal memory access was encountered",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED",
    "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(...)`",
    "No available kernel. Aborting execution.",
]


@pytest.mark.parametrize("message", ALLOCATION_FAILURES)
def test_allocation_failures_are_oom_in_both_adapters(message):
    exc = RuntimeError(message)
    assert torch_fw.is_oom(exc) and jax_fw.is_oom(exc)
    assert classify(exc, "torch")[0] == "oom"


@pytest.mark.parametrize("message", NOT_OOM)
def test_kernel_limits_and_other_failures_are_errors(message):
    exc = RuntimeError(message)
    assert not torch_fw.is_oom(exc) and not jax_fw.is_oom(exc)
    assert classify(exc, "torch")[0] == "error"


def test_triton_out_of_resources_is_not_oom():
    class OutOfResources(Exception):   # triton.runtime.errors.OutOfResources' message
        def __init__(self, required, limit, name):
            super().__init__(f"out of resource: {name}, Required: {required}, Hardware limit: "
                             f"{limit}. Reducing block sizes or `num_stages` may help.")
    assert not torch_fw.is_oom(OutOfResources(262144, 232448, "shared memory"))


def test_the_exception_types():
    assert torch_fw.is_oom(torch.cuda.OutOfMemoryError("anything"))
    assert torch_fw.is_oom(MemoryError()) and jax_fw.is_oom(MemoryError())


def test_xla_resource_exhausted_is_oom_for_jax_only():
    exc = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 "
                       "bytes.")
    assert jax_fw.is_oom(exc)
    plain = RuntimeError("RESOURCE_EXHAUSTED: the stream pool")
    assert jax_fw.is_oom(plain) and not torch_fw.is_oom(plain)


def test_an_allocation_failure_wrapped_by_another_library_is_still_oom():
    try:
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        except RuntimeError as inner:
            raise ValueError("backend compiler failed") from inner
    except ValueError as outer:
        assert torch_fw.is_oom(outer)
    try:
        try:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
        except RuntimeError:
            raise KeyError("during cleanup")   # raised while handling: __context__
    except KeyError as outer:
        assert torch_fw.is_oom(outer)
    # an implementation's own refusal stays a refusal, whatever caused it
    unsupported = UnsupportedError("no kernel for this input")
    unsupported.__cause__ = RuntimeError("CUDA out of memory")
    assert classify(unsupported, "torch")[0] == "unsupported"


def test_the_chain_is_finite_on_a_cycle():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert oom.chain(a) == [a, b] and not torch_fw.is_oom(a)


def test_a_memory_error_is_oom_even_when_asking_the_framework_fails(monkeypatch):
    """Out of address space, asking the adapter can itself fail (an import needs memory): a
    MemoryError is oom before the adapter is asked."""
    from harness.contract import frameworks
    from harness.measure import worker

    def no_adapter(name):
        raise MemoryError("no memory to import the adapter")

    monkeypatch.setattr(frameworks, "get", no_adapter)
    assert worker.classify(MemoryError(), "torch")[0] == "oom"


def test_a_c_failure_without_an_exception_is_oom_only_under_an_address_space_cap(monkeypatch):
    """A C extension out of memory under --max-memory's RLIMIT_AS can fail without raising
    (SystemError "error return without exception set"): oom, saying so, under the cap; an
    error without one."""
    from harness.measure import worker

    exc = SystemError("error return without exception set")
    monkeypatch.setattr(worker, "address_space_capped", lambda: True)
    status, message = worker.classify(exc, "torch")
    assert status == "oom" and "address-space cap" in message
    monkeypatch.setattr(worker, "address_space_capped", lambda: False)
    assert worker.classify(exc, "torch")[0] == "error"
    assert worker.classify(SystemError("some other failure"), "torch")[0] == "error"
