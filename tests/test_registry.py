"""Every completeness check on the primitive registry, in one place.

A primitive is declared once (tracegrad/ops); these tests walk the registry and fail,
naming the primitive and the missing fact, when a declaration forgets something that
would otherwise fail only at run time on some input.
"""

from __future__ import annotations

import re

import numpy as np
from op_cases import CASES

import tracegrad.numpy as tnp
from tracegrad.backends.cuda_c import preamble
from tracegrad.ir import FUSION_ROLES, PRIMITIVES
from tracegrad.ops._rules import CudaReduction
from tracegrad.tracing import dispatch


def test_every_primitive_has_a_numpy_lowering_and_a_shape_rule():
    for name, prim in PRIMITIVES.items():
        assert callable(prim.lowerings.get("numpy")), f"{name} has no NumPy lowering"
        assert callable(prim.abstract_eval), f"{name} has no shape rule"


def test_every_differentiable_primitive_has_jvp_and_vjp_rules():
    for name, prim in PRIMITIVES.items():
        if prim.differentiable:
            assert prim.jvp is not None, f"{name} lacks a JVP rule"
            assert prim.vjp is not None, f"{name} lacks a VJP rule (reverse mode)"


def test_every_primitive_declares_a_cost_rule():
    missing = sorted(name for name, p in PRIMITIVES.items() if not p.has_cost_rule())
    assert not missing, f"primitives without a FLOP rule (flops=... on the declaration): {missing}"


def test_every_primitive_is_covered_by_the_case_table():
    covered = {p for c in CASES for p in c.prims}
    missing = sorted(set(PRIMITIVES) - covered)
    assert not missing, f"primitives without an op case in tests/op_cases.py: {missing}"


def test_fusion_roles_are_declared_and_valid():
    for name, prim in PRIMITIVES.items():
        role = prim.fusion
        assert role is None or callable(role) or role in FUSION_ROLES, f"{name}: unknown fusion role {role!r}"
        if prim.gathered:
            assert role == "gather", f"{name} declares gathered operands but is not a gather"
        if role == "gather":
            assert prim.gathered, f"{name} is a gather but declares no gathered operands"


def test_every_fusible_primitive_declares_a_cuda_template():
    for name, prim in PRIMITIVES.items():
        rule = prim.lowerings.get("cuda")
        if prim.elementwise or prim.fusion == "gather":
            assert callable(rule), f"{name} has no CUDA template (declare(..., cuda=...))"
        if prim.fusion == "reduction":
            assert isinstance(rule, CudaReduction), f"{name} needs a CudaReduction"


def _template_text(rule) -> str:
    """An elementwise CUDA template applied to operand names (it takes 1-3 operands)."""
    for k in (1, 2, 3):
        try:
            return rule(*[f"x{i}" for i in range(k)])
        except TypeError:
            continue
    raise AssertionError(f"CUDA template {rule} takes neither 1, 2 nor 3 operands")


def test_every_cuda_helper_a_template_calls_is_declared():
    """A template calling ``tg_foo`` needs some declaration's ``cuda_helper`` defining it."""
    text = preamble()
    defined = set(re.findall(r"\b(tg_\w+)\s*\(", text)) | set(re.findall(r"TG_FLOAT_FN\((tg_\w+)", text))
    for name, prim in PRIMITIVES.items():
        rule = prim.lowerings.get("cuda")
        if rule is None or not prim.elementwise or "dtype" in rule.__code__.co_varnames:
            continue
        for helper in re.findall(r"\b(tg_\w+)\(", _template_text(rule)):
            assert helper in defined, f"{name}'s CUDA template calls {helper}, which no cuda_helper defines"
    assert "tg_arctan" in defined and "tg_maximum" in defined


def test_cupy_lowerings_are_known_strategies_or_view_rules():
    from tracegrad.backends.cupy_codegen import STRATEGIES

    for name, prim in PRIMITIVES.items():
        rule = prim.lowerings.get("cupy")
        assert rule is None or callable(rule) or rule in STRATEGIES, f"{name}: unknown CuPy lowering {rule!r}"


def test_numpy_names_dispatch_and_export_from_the_declaration():
    registered = dispatch.registered_names()
    for name, prim in PRIMITIVES.items():
        for np_name in prim.numpy_names:
            assert dispatch.resolve_numpy_name(np_name) is not None
            assert registered[np_name] is prim.numpy_fn, f"np.{np_name} does not dispatch to {name}"
            target = tnp
            for part in np_name.split("."):
                target = getattr(target, part)
            assert target is prim.numpy_fn, f"tracegrad.numpy.{np_name} is not {name}'s NumPy function"
        if prim.numpy_names and prim.elementwise:  # the ufunc itself, or a runtime helper taking out=
            assert prim.numpy_ufunc in (None, f"np.{prim.numpy_names[0]}") or prim.numpy_ufunc in prim.runtime


def test_every_registered_numpy_name_is_exported():
    for np_name, fn in dispatch.registered_names().items():
        target = tnp
        for part in np_name.split("."):
            target = getattr(target, part, None)
        assert target is fn, f"np.{np_name} is traced but tracegrad.numpy.{np_name} is missing"


def test_folding_identities_are_well_formed():
    for name, prim in PRIMITIVES.items():
        for pos, unit in prim.units:
            assert pos in (0, 1) and isinstance(unit, int | float), f"{name}: bad unit {(pos, unit)}"
            # the identity really holds for the NumPy implementation
            x = np.array([1.5, -2.0, 0.25])
            args = [x, x]
            args[pos] = np.asarray(unit, x.dtype)
            np.testing.assert_array_equal(prim.impl(*args), x, err_msg=f"{name}: unit {unit} at {pos}")
        if prim.involution:
            x = np.array([1.5, -2.0])
            np.testing.assert_array_equal(prim.impl(prim.impl(x)), x, err_msg=f"{name} is not an involution")


def test_dir_of_tracegrad_numpy_shows_only_public_names():
    names = set(dir(tnp))
    assert not names & {"Any", "Sequence", "math", "string", "builtins", "user_source", "Tracer", "aval_of",
                        "normalize_axes", "annotations", "ShapeError"}
    assert {"sin", "arctan", "sum", "mean", "matmul", "cross_entropy", "float32"} <= names
    assert all(hasattr(tnp, n) for n in names)
