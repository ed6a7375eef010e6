"""Feature extraction in the precision pretraining ran in (``eval_precision``)."""

from __future__ import annotations

import pytest
import torch

from sslkit.eval.context import EvalContext, feature_dtype


@pytest.mark.parametrize("setting,run,expected", [
    ("auto", "bf16-mixed", torch.bfloat16),
    ("auto", "16-mixed", torch.float16),
    ("auto", "32-true", None),
    ("auto", "auto", None),        # a checkpoint from before runs recorded the resolved value
    (None, "bf16-mixed", torch.bfloat16),
    ("32-true", "bf16-mixed", None),
    ("bf16-mixed", "32-true", torch.bfloat16),
])
def test_feature_dtype(setting, run, expected):
    assert feature_dtype(setting, run) is expected


def test_bf16_features_are_float32_and_close_to_float32_ones(smoke_parts, tmp_path):
    _, module, dm = smoke_parts
    fp32 = EvalContext(module=module, datamodule=dm, run_dir=tmp_path)
    bf16 = EvalContext(module=module, datamodule=dm, run_dir=tmp_path, autocast=torch.bfloat16)
    (x32, y32), (x16, y16) = fp32.features("test"), bf16.features("test")
    assert x16.dtype == torch.float32 and torch.equal(y16, y32)
    rel = ((x16 - x32).norm() / x32.norm()).item()
    # computed in bf16 (8-bit mantissa: a relative error of order 2^-8 per op), not in float32
    assert 0 < rel < 0.03, rel
