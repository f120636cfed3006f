"""Gelu: exact GELU values and gradients, run without oneDNN on CPU (alone and in the whole world model), the
oneDNN switch restored."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pointworld.model.gelu import Gelu, _without_onednn, gelu


def test_values_match_the_erf_formula_in_float64() -> None:
    x = torch.linspace(-8.0, 8.0, 2001, dtype=torch.float64).reshape(3, 667)
    expected = x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    out = Gelu()(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=0.0, atol=1e-14)


def test_float32_is_within_float32_rounding_of_float64() -> None:
    x = torch.randn(513, 48, generator=torch.Generator().manual_seed(0))
    expected = x.double() * 0.5 * (1.0 + torch.erf(x.double() / math.sqrt(2.0)))
    torch.testing.assert_close(gelu(x).double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gelu(x), F.gelu(x), rtol=1e-5, atol=2e-6)


def test_gradient_matches_finite_differences() -> None:
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(gelu, (x,), eps=1e-6, atol=1e-9)


def test_gradient_flows_through_a_module_stack() -> None:
    torch.manual_seed(2)
    ours = torch.nn.Sequential(torch.nn.Linear(6, 8), Gelu(), torch.nn.Linear(8, 1))
    reference = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(32, 6)
    ours(x).sum().backward()
    reference(x).sum().backward()
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_without_autograd_and_empty_input(mode) -> None:
    x = torch.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    with mode():
        assert Gelu()(torch.zeros(0, 4)).shape == (0, 4)
        out = Gelu()(x)
    assert not out.requires_grad
    torch.testing.assert_close(out, F.gelu(x.detach()))


def test_keeps_bfloat16() -> None:
    x = torch.randn(64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    out = gelu(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.gelu(x.float()), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("initial", [True, False])
def test_onednn_switch_is_off_inside_and_restored_after(initial: bool) -> None:
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = initial
    try:
        seen = _without_onednn(lambda t: torch.tensor(torch.backends.mkldnn.enabled), torch.ones(1))
        assert not bool(seen)
        assert torch.backends.mkldnn.enabled is initial

        def fail(t: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("kernel failed")

        with pytest.raises(RuntimeError, match="kernel failed"):
            _without_onednn(fail, torch.ones(1))
        assert torch.backends.mkldnn.enabled is initial
    finally:
        torch.backends.mkldnn.enabled = previous


_GELU_PROBE = """
import sys, torch, torch.nn.functional as F
from pointworld.model.gelu import gelu
fn = gelu if sys.argv[1] == "ours" else F.gelu
x = torch.randn(300, 48, requires_grad=True)
fn(x).sum().backward()
"""

_MODEL_PROBE = """
import torch
from pointworld.model.synthetic import synthetic_push_batch
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig
torch.manual_seed(0)
model = WorldModel(WorldModelConfig())
scene, action, target, valid = synthetic_push_batch(2, 256, 32, model.config.horizon, seed=0)
model.update_normalization(scene, action, target, valid)
model.finalize_normalization()
model(scene, action).displacement.sum().backward()
"""


def _onednn_calls(probe: str, *args: str) -> int:
    """oneDNN primitives executed by the Python source ``probe`` (a fresh process with ``ONEDNN_VERBOSE=1``)."""
    env = dict(os.environ, ONEDNN_VERBOSE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout
    return sum(1 for line in out.splitlines() if ",primitive,exec," in line)


@pytest.fixture(scope="module")
def onednn_gelu_calls() -> int:
    """oneDNN primitives run by one forward + backward of ``F.gelu``: the control that shows the count works
    (the tests that use it skip where this torch build does not route GELU through oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    calls = _onednn_calls(_GELU_PROBE, "torch")
    if calls == 0:
        pytest.skip("this torch build does not route float32 GELU through oneDNN")
    return calls


def test_cpu_gelu_runs_no_onednn_primitive(onednn_gelu_calls: int) -> None:
    assert _onednn_calls(_GELU_PROBE, "ours") == 0


def test_world_model_forward_and_backward_run_no_onednn_primitive(onednn_gelu_calls: int) -> None:
    assert _onednn_calls(_MODEL_PROBE) == 0
