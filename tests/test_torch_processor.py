"""The transformers LogitsProcessor must do exactly what the numpy reference does."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from distillguard.watermark import Watermark, WatermarkKey
from distillguard.watermark.hashing import to_unit_interval
from distillguard.watermark.torch_ops import _gumbel_choice
from distillguard.watermark.torch_processor import WatermarkLogitsProcessor

VOCAB = 49152
keys = st.binary(min_size=32, max_size=32).map(lambda s: WatermarkKey(secret=s, key_id="t"))


@settings(max_examples=20, deadline=None)
@given(
    key=keys,
    scheme=st.sampled_from(["kgw", "gumbel"]),
    width=st.integers(0, 3),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
@example(  # a near-tie that float32 Gumbel noise decided the other way
    key=WatermarkKey(
        secret=bytes.fromhex("43766be724ebfb7999dffc8de47225c3dba24a39fdb8dc7587ba286840db4eb5"),
        key_id="t",
    ),
    scheme="gumbel",
    width=1,
    batch=2,
    seed=368319249,
)
def test_torch_processor_equals_numpy_reference(key, scheme, width, batch, seed):
    rng = np.random.default_rng(seed)
    watermark = Watermark(key, scheme=scheme, context_width=width)
    input_ids = rng.integers(0, VOCAB, (batch, 1 + width * 2))
    logits = rng.standard_normal((batch, VOCAB)).astype(np.float32)
    expected = watermark.apply(logits, input_ids)
    got = WatermarkLogitsProcessor(watermark)(torch.from_numpy(input_ids), torch.from_numpy(logits))
    assert np.array_equal(got.numpy(), expected)


def test_gumbel_processor_does_not_replay_a_repeated_context():
    watermark = Watermark(WatermarkKey.generate(), scheme="gumbel", context_width=1)
    processor = WatermarkLogitsProcessor(watermark)
    logits = torch.zeros((1, VOCAB))  # flat: the keyed choice alone picks the token
    ids = torch.tensor([[7, 5]])
    first = processor(ids, logits).argmax(-1)
    again = [processor(torch.tensor([[9, 5]]), logits).argmax(-1) for _ in range(20)]
    # Context (5,) was used once: later uses draw fresh noise, not the keyed choice.
    assert any(int(a) != int(first) for a in again)
    fresh = WatermarkLogitsProcessor(watermark)
    assert int(fresh(ids, logits).argmax(-1)) == int(first)


def _noise(signed: np.ndarray) -> np.ndarray:
    values = signed.view(np.uint32) ^ np.uint32(0x80000000)
    return -np.log(-np.log(to_unit_interval(values)))


@pytest.mark.parametrize("lead", [0, 1, 2])
def test_gumbel_choice_is_exact_at_the_ends_of_the_unit_interval(lead):
    """Where float32 cannot resolve u (the largest; the smallest, whose u - 1 rounds to -1)
    a token that leads by far still wins."""
    rng = np.random.default_rng(lead)
    rows = 64
    signed = rng.integers(-(2**31), 2**31, (rows, VOCAB)).astype(np.int32)
    signed[:, :3] = [2**31 - 1, -(2**31), -(2**31) + 256]
    scores = rng.standard_normal((rows, VOCAB)).astype(np.float32)
    scores[:, lead] += 40.0
    got = _gumbel_choice(torch.from_numpy(signed), torch.from_numpy(scores), np.zeros(rows, bool))
    assert np.array_equal(got.argmax(-1).numpy(), np.argmax(scores + _noise(signed), -1))


def test_gumbel_choice_settles_a_crowd_of_near_ties_in_float64():
    """Twelve tokens within float32's error of each other: the float64 winner (which
    float32 ranks last of them) must be chosen, not float32's."""
    tail = np.arange(12)
    signed = np.full((1, VOCAB), 0, dtype=np.int32)
    signed[0, tail] = -(2**31) + tail * 256  # the smallest u: float32's noise is off by 0.01
    scores = np.full((1, VOCAB), -100.0, dtype=np.float32)
    scores[0, tail] = 40.0 - _noise(signed[:, tail])[0]  # every one ties in float64 ...
    scores[0, 2] += 0.001  # ... but this one, whose float32 noise reads lowest
    got = _gumbel_choice(torch.from_numpy(signed), torch.from_numpy(scores), np.zeros(1, bool))
    assert int(got.argmax(-1)) == int(np.argmax(scores + _noise(signed), -1)[0]) == 2


def test_gumbel_choice_breaks_an_exact_tie_as_the_reference_does():
    """Two tokens with the same score and the same 24-bit noise: the lower id, as numpy."""
    rng = np.random.default_rng(3)
    signed = rng.integers(-(2**31), 2**31, (32, VOCAB)).astype(np.int32)
    scores = np.full((32, VOCAB), -50.0, dtype=np.float32)
    low, high = rng.integers(0, VOCAB // 2, 32), rng.integers(VOCAB // 2, VOCAB, 32)
    rows = np.arange(32)
    signed[rows, low] = signed[rows, high] = 2**31 - 1  # one 24-bit value
    signed[rows, high] -= 200  # different hash bits, the same kept 24
    scores[rows, low] = scores[rows, high] = 0.0
    got = _gumbel_choice(torch.from_numpy(signed), torch.from_numpy(scores), np.zeros(32, bool))
    assert np.array_equal(got.argmax(-1).numpy(), np.argmax(scores + _noise(signed), -1))
    assert np.array_equal(got.argmax(-1).numpy(), low)
