"""What the device pays (issue 22): bench's load / first / tail latency and resident peak,
and the activation memory planned from the graph, checked against ExecuTorch's own plan."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from evit_export.validation import memory
from evit_export.validation.memory import TensorLife, peak_live_bytes, plan_arena, plan_shared_objects

from evit_export.core.jsonio import loads_strict
from tests.cli_helpers import run_cli

KEYS = ("load_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "peak_rss_bytes")


@pytest.fixture(scope="module")
def m0_onnx(tmp_path_factory):
    import evit_export

    model = evit_export.load_model("m0", img_size=64, num_classes=10, seed=0)  # seeded realistic BN statistics
    return evit_export.export(model, "onnx", out=tmp_path_factory.mktemp("mem") / "m0.onnx").path


def test_bench_json_has_load_first_tail_and_peak(capsys, m0_onnx):
    code, out, err = run_cli(capsys, "bench", m0_onnx, "--iterations", "8", "--json")
    assert code == 0, err
    (row,) = loads_strict(out)
    assert all(isinstance(row[k], (int, float)) and row[k] > 0 for k in KEYS), {k: row.get(k) for k in KEYS}
    assert row["p50_ms"] == row["median_ms"]
    assert row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    # onnxruntime holds the weights in memory: the model's peak is at least the file's weights
    # and far from the whole process (torch is not in the measuring process at all).
    weights = m0_onnx.stat().st_size
    assert 0.8 * weights <= row["peak_rss_bytes"] < 40 * weights + 200e6, row["peak_rss_bytes"]
    assert row["memory"]["baseline_rss_bytes"] > 0
    assert row["memory"]["peak_rss"]
    code, out, _ = run_cli(capsys, "bench", m0_onnx, "--iterations", "3")
    assert code == 0
    assert "peak RSS MB" in out
    assert "p99 ms" in out
    assert "load ms" in out


def test_inspect_json_carries_the_planned_memory(capsys, m0_onnx):
    """Issue 22.2: memory is known before a device is bought: inspect --json plans the
    activations from the graph and counts the weights at the artifact's precision."""
    code, out, err = run_cli(capsys, "inspect", m0_onnx, "--json")
    assert code == 0, err
    data = loads_strict(out)
    planned = memory.static_memory(str(m0_onnx))
    assert data["activation_bytes"] == planned["activation_bytes"]
    assert data["activation_bytes"] > 0
    assert data["packed_activation_bytes"] <= data["activation_bytes"]
    # fp32 weights: four bytes per parameter (the ONNX graph's initializers count the
    # parameters after folding; the plan counts the deploy model's: within 1%)
    assert abs(data["weight_bytes"] - 4 * data["params"]) <= 0.01 * data["weight_bytes"], data


def test_peak_tracking_sees_a_transient_allocation_after_the_baseline():
    """The high-water mark above the baseline catches memory that was freed again: the
    pattern of a runtime's load-time scratch (and the reason a fresh process is needed)."""
    baseline = memory.start_peak_tracking()
    block = np.ones(64 << 20, np.uint8)  # 64 MiB, touched
    del block
    peak = memory.peak_above(baseline)
    assert peak >= 60 << 20, (peak, baseline.method)


def test_arena_planners_on_known_lifetimes():
    # a chain a -> b -> c -> d: only neighbours live together, so two slots suffice
    chain = [TensorLife("a", 100, 0, 1), TensorLife("b", 200, 1, 2), TensorLife("c", 100, 2, 3),
             TensorLife("d", 200, 3, 4)]
    assert peak_live_bytes(chain) == 300
    assert plan_arena(chain, alignment=1) == 300
    assert plan_shared_objects(chain, alignment=1) == 300
    # a long-lived skip tensor pins its bytes under everything it spans
    skip = chain + [TensorLife("skip", 50, 0, 4)]
    assert plan_arena(skip, alignment=1) == peak_live_bytes(skip) == 350
    # alignment rounds every tensor up
    assert plan_arena([TensorLife("x", 1, 0, 0)], alignment=64) == 64
    # best-fit offsets can beat whole buffers: a small tensor fits above another's end
    mixed = [TensorLife("big", 300, 0, 1), TensorLife("mid", 200, 2, 3), TensorLife("small", 100, 2, 3)]
    assert plan_arena(mixed, alignment=1) == 300 <= plan_shared_objects(mixed, alignment=1)


class _ConvAttention(torch.nn.Module):
    """Conv stem, a residual, and an attention block: branches and skips like EfficientViT's."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 32, 3, 2, 1))
        self.qkv = torch.nn.Conv2d(32, 96, 1)
        self.proj = torch.nn.Conv2d(32, 32, 1)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).split(c, dim=1)
        attn = (q.transpose(1, 2) @ k).softmax(-1)
        x = x + self.proj((v @ attn.transpose(1, 2)).reshape(b, c, h, w))
        return self.head(x.mean((2, 3)))


def _randomised(model):
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # realistic statistics, not the identity defaults
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _executorch_planned_bytes(model, example) -> int:
    pytest.importorskip("executorch", reason="ExecuTorch is not installed (pip install 'evit-export[executorch]')")
    from executorch.exir import to_edge

    program = to_edge(torch.export.export(model, (example,), strict=False)).to_executorch()
    return sum(program.executorch_program.execution_plan[0].non_const_buffer_sizes)


def test_static_plan_is_within_ten_percent_of_executorchs_plan():
    """ExecuTorch plans every activation of a non-delegated program into its memory-planned
    buffer: the static figure from the same graph lands within 10 % of it."""
    model, example = _randomised(_ConvAttention()), torch.rand(2, 3, 64, 64)
    planned = _executorch_planned_bytes(model, example)
    static = memory.memory_of_program(memory.export_graph(model, example))
    assert abs(static["activation_bytes"] - planned) <= 0.10 * planned, (static, planned)
    assert static["peak_live_bytes"] <= static["packed_activation_bytes"] <= static["activation_bytes"]
    assert static["weight_bytes"] == sum(t.numel() * (4 if t.dtype.is_floating_point else t.element_size())
                                         for t in model.state_dict().values())


@pytest.mark.slow
def test_static_plan_of_m0_is_within_ten_percent_of_executorchs_plan():
    from evit_export.validation.latency.workloads import efficientvit_model

    model, size = efficientvit_model("m0", img_size=224)
    example = torch.zeros(1, 3, size, size)
    planned = _executorch_planned_bytes(model, example)
    static = memory.memory_of_program(memory.export_graph(model, example))
    assert abs(static["activation_bytes"] - planned) <= 0.10 * planned, (static, planned)


def test_static_memory_json_is_strict_and_scales_with_precision():
    fp32 = memory.static_memory("m0", img_size=64, precision="fp32")
    int8 = memory.static_memory("m0", img_size=64, precision="int8")
    json.loads(json.dumps(fp32, allow_nan=False))
    assert fp32["activation_bytes"] > 0 and fp32["weight_bytes"] > 4 * 2_000_000  # M0: 2.3 M parameters
    assert int8["activation_bytes"] < fp32["activation_bytes"] / 3
