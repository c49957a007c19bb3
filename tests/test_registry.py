"""The registry: names, capabilities, availability reasons, user plug-ins, clear errors."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import harness
from harness.errors import UnknownNameError, UnsupportedError, UsageError
from harness.contract.registry import (
    FAMILIES,
    FRAMEWORKS,
    REGISTRY,
    Capabilities,
    Registry,
    register,
)

EXPECTED = ["softmax_torch", "sdpa_math", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn",
            "flash_attn", "xformers", "performer_torch", "hrr_torch", "hrr_jax", "softmax_jax",
            "flex_attention"]


def test_all_eleven_builtins_are_registered():
    assert set(EXPECTED) <= set(harness.names())
    for impl in harness.all_implementations():
        assert impl.framework in FRAMEWORKS
        assert impl.family in FAMILIES


@pytest.mark.parametrize("name", EXPECTED)
def test_availability_never_raises_and_gives_a_reason(name):
    impl = harness.get(name)
    for device in ("cpu", "cuda", "cuda:7"):
        verdict = impl.availability(device)
        assert isinstance(verdict.available, bool)
        if not verdict.available:
            assert verdict.reason.startswith(name), verdict.reason


def test_cpu_availability_matches_what_this_machine_runs():
    # the built-in methods only: other tests register deliberately crashing ones (impls_faults)
    builtin = [impl for impl in harness.all_implementations()
               if impl.module.startswith("implementations.")]
    available = {impl.name for impl in builtin if impl.availability("cpu")}
    assert {"softmax_torch", "sdpa_math", "sdpa_flash", "performer_torch", "hrr_torch"} <= available
    for cuda_only in ("sdpa_efficient", "sdpa_cudnn", "flash_attn", "xformers"):
        assert cuda_only not in available
        assert "cpu" in harness.get(cuda_only).availability("cpu").reason


def test_missing_package_reason_names_the_package():
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash_attn is installed here")
    reason = harness.get("flash_attn").availability("cuda").reason
    assert "flash_attn" in reason and "not installed" in reason


def test_unknown_name_lists_valid_ones():
    with pytest.raises(UnknownNameError) as info:
        harness.get("no_such_attention")
    message = str(info.value)
    assert "no_such_attention" in message and "softmax_torch" in message and "hrr_torch" in message


def test_calling_unsupported_capability_raises_clearly(rng):
    q = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    with pytest.raises(UnsupportedError, match="causal"):
        harness.attention("hrr_torch", q, q, q, causal=True)
    with pytest.raises(UnsupportedError, match="cpu"):
        harness.attention("sdpa_efficient", q, q, q)


def test_bad_numpy_input_is_a_usage_error(rng):
    q = rng.standard_normal((1, 1, 8, 8))
    with pytest.raises(UsageError, match="float32 or all float64"):
        harness.attention("softmax_torch", q.astype(np.float16), q, q)
    with pytest.raises(UsageError, match=r"\(B, Hq, Tq, D\)"):
        harness.attention("softmax_torch", q[0], q[0], q[0])
    with pytest.raises(UsageError, match="key_padding_mask"):
        harness.attention("softmax_torch", q, q, q, key_padding_mask=np.ones((1, 9), bool))


def test_user_module_registers_without_editing_attnbench(tmp_path, monkeypatch, rng):
    (tmp_path / "my_attention_plugin.py").write_text(textwrap.dedent('''
        from harness import Capabilities, register

        @register("user_scaled_copy", framework="torch", family="exact",
                  capabilities=Capabilities(devices=("cpu",), dtypes=("float32",)))
        def user_scaled_copy(q, k, v, *, causal=False, key_padding_mask=None):
            """Returns v: a deliberately wrong attention, to prove the plug-in path."""
            return v * 1.0
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    harness.load_impl_modules(["my_attention_plugin"])
    try:
        impl = harness.get("user_scaled_copy")
        assert impl.availability("cpu")
        q = rng.standard_normal((1, 2, 4, 8)).astype(np.float32)
        np.testing.assert_array_equal(harness.attention("user_scaled_copy", q, q, q + 1), q + 1)
        assert not impl.supports(device="cpu", dtype="float64")
    finally:
        REGISTRY._impls.pop("user_scaled_copy", None)
        sys.modules.pop("my_attention_plugin", None)


def test_unimportable_user_module_is_a_usage_error():
    with pytest.raises(UsageError, match="no_such_module_xyz"):
        harness.load_impl_modules(["no_such_module_xyz"])


def test_registry_validates_declarations():
    registry = Registry()
    fn = lambda q, k, v, **kw: v  # noqa: E731
    from harness.contract.registry import Implementation

    with pytest.raises(ValueError, match="framework"):
        registry.add(Implementation("x", "tensorflow", "exact", Capabilities(), fn))
    with pytest.raises(ValueError, match="family"):
        registry.add(Implementation("x", "torch", "magic", Capabilities(), fn))
    with pytest.raises(ValueError, match="dtypes"):
        registry.add(Implementation("x", "torch", "exact", Capabilities(dtypes=("int8",)), fn))


def test_a_probe_that_raises_becomes_a_reason():
    def explode(device, dtype):
        raise RuntimeError("driver on fire")

    @register("exploding_probe", framework="torch", family="exact", probe=explode,
              capabilities=Capabilities(devices=("cpu",)))
    def exploding(q, k, v, *, causal=False, key_padding_mask=None):
        return v

    try:
        verdict = harness.get("exploding_probe").availability("cpu")
        assert not verdict and "driver on fire" in verdict.reason
    finally:
        REGISTRY._impls.pop("exploding_probe", None)


def test_broken_implementation_is_unavailable_with_reason():
    @register("returns_wrong_shape", framework="torch", family="exact",
              capabilities=Capabilities(devices=("cpu",)))
    def wrong(q, k, v, *, causal=False, key_padding_mask=None):
        return v[..., :1]

    try:
        verdict = harness.get("returns_wrong_shape").availability("cpu")
        assert not verdict and "shape" in verdict.reason
        assert verdict.failed and verdict.status == "error"   # a failure, not unsupported
    finally:
        REGISTRY._impls.pop("returns_wrong_shape", None)


def test_one_probe_for_the_registry_and_the_workers():
    """The registry's availability and a worker's probe are one typed ProbeResult from one
    code path (harness.contract.probe): a worker adds the gate, nothing else."""
    from harness.contract.probe import ProbeResult
    from harness.measure import worker

    calls = []

    def own_probe(device, dtype):
        calls.append((device, dtype))
        return harness.Availability(dtype != "float64", "no float64 here")

    @register("probed_once", framework="torch", family="exact", probe=own_probe,
              capabilities=Capabilities(devices=("cpu",), dtypes=("float32", "float64")))
    def probed(q, k, v, *, causal=False, key_padding_mask=None):
        return v

    try:
        impl = harness.get("probed_once")
        here = worker.probe_here(impl, device="cpu", dtype="float32")
        assert isinstance(here, ProbeResult) and here.available and here.gate is None
        assert impl.availability("cpu", "float32") is here and calls == [("cpu", "float32")]
        refused = worker.probe_here(impl, device="cpu", dtype="float64")
        assert not refused and refused.reason == "no float64 here"
        assert refused.status == "unsupported" and not refused.failed
        static = worker.probe_here(impl, device="cpu", dtype="float32", causal=True)
        assert not static and "causal" in static.reason and static.status == "unsupported"
        gated = worker.probe_task([("probed_once", "cpu", "float32", False)],
                                  worker.WorkerContext())
        result = gated[("probed_once", "cpu", "float32", False)]
        assert result.available and result.gate is not None and not result.gate.passed
        assert result.gate_fields() == {"gate_max_error": result.gate.max_error,
                                        "gate_tolerance": result.gate.tolerance}
    finally:
        REGISTRY._impls.pop("probed_once", None)


def test_supports_gives_every_reason_not_the_first():
    from harness.contract.registry import Implementation, Query

    def constraints(query: Query) -> list[str]:
        return ["no long sequences on tuesdays"] if query.backward else []

    impl = Implementation("every_reason", "torch", "exact",
                          Capabilities(devices=("cuda",), dtypes=("float16",), causal=False,
                                       backward=True), fn=lambda q, k, v, **kw: q,
                          constraints=constraints)
    query = Query(device="cpu", dtype="float32", causal=True, key_padding_mask=True,
                  backward=True)
    reasons = impl.not_supported_reasons(query)
    assert reasons == ["does not run on cpu (supports cuda)",
                       "dtype float32 not supported (supports float16)", "no causal mode",
                       "no key-padding mask support", "no long sequences on tuesdays"]
    verdict = impl.supports(device="cpu", dtype="float32", causal=True, key_padding_mask=True,
                            backward=True, run_probe=False)
    assert not verdict and verdict.reasons == tuple(reasons)
    assert verdict.reason == "every_reason: " + "; ".join(reasons)
    # one reason reads as before
    assert impl.supports(device="cuda", dtype="float16", causal=True, run_probe=False).reason \
        == "every_reason: no causal mode"


def test_sdpa_flash_on_cuda_lists_both_of_its_constraints():
    from harness.contract.registry import Query

    reasons = harness.get("sdpa_flash").not_supported_reasons(
        Query(device="cuda", dtype="float32", key_padding_mask=True))
    assert len(reasons) == 2 and "attn_mask" in reasons[0] and "float16" in reasons[1]


def test_an_implementation_may_declare_its_own_gate_tolerance():
    from harness.measure.gate import check
    from harness.contract.registry import Implementation

    def sloppy(q, k, v, *, causal=False, key_padding_mask=None):
        impl = harness.get("softmax_torch")
        return impl.fn(q, k, v, causal=causal, key_padding_mask=key_padding_mask) * 1.001

    caps = Capabilities(devices=("cpu",), dtypes=("float32",))
    strict = Implementation("sloppy", "torch", "exact", caps, fn=sloppy)
    lenient = Implementation("sloppy", "torch", "exact", caps, fn=sloppy,
                             gate_tolerance={"float32": 1e-2})
    pytest.importorskip("torch")
    assert not check(strict, device="cpu", dtype="float32").passed
    result = check(lenient, device="cpu", dtype="float32")
    assert result.passed and result.tolerance == 1e-2


def test_traits_are_registration_data():
    from harness.contract.registry import REGISTRY, Implementation
    from harness.contract.traits import Traits

    harness.register("traits_declared", framework="torch", family="kernel",
                     traits=Traits(memory="features", baseline=3))(lambda q, k, v, **kw: q)
    harness.register("traits_silent", framework="torch", family="exact")(lambda q, k, v, **kw: q)
    try:
        assert harness.get("traits_declared").traits == Traits(memory="features", baseline=3)
        assert harness.get("traits_silent").traits == Traits()   # nothing declared
        with pytest.raises(ValueError, match="traits must be a harness.Traits"):
            REGISTRY.add(Implementation("traits_wrong", "torch", "exact", Capabilities(),
                                        fn=lambda q, k, v, **kw: q,
                                        traits={"memory": "tiled"}))  # type: ignore[arg-type]
    finally:
        for name in ("traits_declared", "traits_silent", "traits_wrong"):
            REGISTRY._impls.pop(name, None)


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("behaviour, available, failed, words", [
    ("right", True, False, ""),
    ("wrong_shape", False, True, "returned shape (1, 2, 16, 8) for input (1, 2, 16, 16)"),
    ("nan", False, True, "non-finite output on a tiny input"),
    ("raises", False, False, "fails on cpu/float32: RuntimeError: no kernel"),
])
def test_the_tiny_run_tells_a_wrong_output_from_a_method_that_cannot_run(
        framework, behaviour, available, failed, words):
    """Both adapters' tiny runs end in one verdict (harness.contract.probe.tiny_run_result): a
    wrong shape or a NaN is a failure (an error record), raising means unsupported here."""
    from harness.contract import frameworks
    from harness.contract.registry import Capabilities, Implementation

    def fn(q, k, v, *, causal=False, key_padding_mask=None):
        if behaviour == "raises":
            raise RuntimeError("no kernel\nsecond line")
        if behaviour == "wrong_shape":
            return q[..., :8]
        return q * float("nan") if behaviour == "nan" else q

    impl = Implementation(name="tiny_" + behaviour, framework=framework, family="exact",
                          capabilities=Capabilities(devices=("cpu",)), fn=fn)
    result = frameworks.get(framework).tiny_run(impl, "cpu", "float32")
    assert bool(result) is available and result.failed is failed
    assert words in result.reason
    assert result.status == ("error" if failed else "unsupported") or available


@pytest.mark.parametrize("fn, words", [
    (42, "expected a function, got int"),
    (lambda q, k, v: q, "takes no causal or key_padding_mask keyword"),
    (lambda q, k, *, causal=False, key_padding_mask=None: q, "fewer than three positional"),
])
def test_register_refuses_what_cannot_be_an_attention_function(fn, words):
    """A plug-in's mistake is named where it is made (its module's import: one line, exit 2),
    not recorded later as 'unsupported: ... TypeError' as if the method lacked a feature."""
    import harness

    with pytest.raises(TypeError, match=words):
        harness.register("not_attention", framework="torch", family="exact")(fn)
    assert "not_attention" not in REGISTRY.names()
