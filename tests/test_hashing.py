"""Properties of the keyed hash: uniform, key-dependent, identical in numpy and torch."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from distillguard.watermark import Watermark, WatermarkKey
from distillguard.watermark.hashing import KeyedHash, splitmix64, to_unit_interval

VOCAB = 49152
keys = st.binary(min_size=32, max_size=32).map(lambda s: WatermarkKey(secret=s, key_id="t"))
contexts = st.lists(st.integers(0, VOCAB - 1), min_size=0, max_size=4)


def test_splitmix64_matches_reference_vector():
    # First outputs of SplitMix64 seeded with 0 (Steele, Lea & Flood 2014).
    state = np.array([0], dtype=np.uint64)
    outputs = []
    for _ in range(2):
        outputs.append(int(splitmix64(state)[0]))
        state = state + np.uint64(0x9E3779B97F4A7C15)
    assert outputs == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


@settings(max_examples=40, deadline=None)
@given(key=keys, context=contexts, gamma=st.sampled_from([0.1, 0.25, 0.5]))
def test_green_fraction_of_vocabulary_is_gamma(key, context, gamma):
    watermark = Watermark(key, gamma=gamma, context_width=len(context))
    values = watermark.hash.vocabulary_values(np.array([context], dtype=np.int64))[0]
    fraction = watermark.scheme.green(values).mean()
    sd = np.sqrt(gamma * (1 - gamma) / VOCAB)
    assert abs(fraction - gamma) < 5 * sd


@settings(max_examples=25, deadline=None)
@given(key=keys, context=contexts)
def test_hash_values_are_uniform_over_the_vocabulary(key, context):
    table = KeyedHash.for_key(key, "kgw", VOCAB)
    values = table.vocabulary_values(np.array([context], dtype=np.int64))[0]
    counts = np.bincount((values >> np.uint32(28)).astype(np.int64), minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-5
    unit = to_unit_interval(values)
    assert unit.min() > 0.0 and unit.max() < 1.0


@settings(max_examples=25, deadline=None)
@given(key=keys, context=contexts, token=st.integers(0, VOCAB - 1))
def test_detector_and_generator_views_agree(key, context, token):
    table = KeyedHash.for_key(key, "kgw", VOCAB)
    ctx = np.array([context], dtype=np.int64)
    assert table.values(ctx, np.array([token]))[0] == table.vocabulary_values(ctx)[0, token]


def test_green_lists_differ_between_contexts_keys_and_schemes():
    key = WatermarkKey.generate()
    table = KeyedHash.for_key(key, "kgw", VOCAB)
    rows = table.vocabulary_values(np.arange(200, dtype=np.int64)[:, None]) < 2**30
    # Two contexts share a green token with probability gamma**2, not 1.
    overlap = (rows[:, None, :] & rows[None, :, :]).mean(axis=-1)
    off_diagonal = overlap[~np.eye(200, dtype=bool)]
    assert abs(off_diagonal.mean() - 0.25**2) < 0.002
    other_key = KeyedHash.for_key(WatermarkKey.generate(), "kgw", VOCAB)
    assert not np.array_equal(other_key.token_table, table.token_table)
    other_scheme = KeyedHash.for_key(key, "gumbel", VOCAB)
    assert not np.array_equal(other_scheme.token_table, table.token_table)
