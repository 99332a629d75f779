"""The transformers LogitsProcessor must do exactly what the numpy reference does."""

import numpy as np
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from distillguard.watermark import Watermark, WatermarkKey
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
