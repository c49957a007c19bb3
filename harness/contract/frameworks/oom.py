"""Which failures are out-of-memory: an allocation that did not fit, so a larger input will
not fit either (the runner records "oom" and stops growing T), as opposed to an error.

An allocation failure reads differently in each library: torch's caching allocator
(``torch.cuda.OutOfMemoryError``, "CUDA out of memory. Tried to allocate ..."), the CUDA runtime
and driver ("CUDA error: out of memory", cudaErrorMemoryAllocation, CUDA_ERROR_OUT_OF_MEMORY),
the CUDA libraries' status codes for a failed workspace or handle allocation
(CUBLAS_STATUS_ALLOC_FAILED, CUDNN_STATUS_ALLOC_FAILED, CUSOLVER_STATUS_ALLOC_FAILED,
CUSPARSE_STATUS_ALLOC_FAILED, CUFFT_ALLOC_FAILED, CURAND_STATUS_ALLOCATION_FAILED), the CPU
allocator ("DefaultCPUAllocator: not enough memory" / "can't allocate memory", MemoryError)
and XLA (RESOURCE_EXHAUSTED).

Not out of memory: Triton's "out of resource: shared memory" (or registers) is a kernel
configuration that exceeds a per-block limit whatever the input's size, and CUDA's "too many
resources requested for launch" likewise; both stay errors.
"""

from __future__ import annotations

# matched in the lower-cased text of the exception and of each exception that caused it
ALLOCATION_FAILED = ("out of memory", "out_of_memory", "can't allocate memory",
                     "cannot allocate memory", "not enough memory", "failed to allocate",
                     "_alloc_failed", "_allocation_failed", "errormemoryallocation")
XLA_EXHAUSTED = "RESOURCE_EXHAUSTED"    # matched as written (XLA's status code)
MAX_CHAIN = 8


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (``__cause__``,
    ``__context__``), nearest first, each once: a library that wraps an allocation failure in
    its own error (a compiler's, a backend's) still reports it."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < MAX_CHAIN:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend((item.__cause__, item.__context__))
    return seen


def says_allocation_failed(text: str, *, xla: bool = False) -> bool:
    """An allocation failure's message (``xla``: XLA's RESOURCE_EXHAUSTED as well)."""
    if xla and XLA_EXHAUSTED in text:
        return True
    lower = text.lower()
    return any(s in lower for s in ALLOCATION_FAILED)


def is_oom(exc: BaseException, *, types: tuple[type, ...] = (), xla: bool = False) -> bool:
    """``exc`` (or what caused it) is a MemoryError, one of ``types`` (a framework's OOM
    exception), or says that an allocation failed."""
    kinds = (MemoryError, *types)
    return any(isinstance(e, kinds) or says_allocation_failed(str(e), xla=xla)
               for e in chain(exc))
