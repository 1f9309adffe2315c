import pytest
import torch

from workbench.model.loading import ModelLoadError, available_models, load_model


def test_tiny_llama_has_grouped_query_attention(tiny_llama):
    shape = tiny_llama.heads.shape
    assert (shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.d_head) == (3, 4, 2, 16)
    assert tiny_llama.signature["n_heads"] == 4 and tiny_llama.signature["model"] == "tiny-llama"


def test_model_is_frozen(tiny_model):
    assert not any(p.requires_grad for p in tiny_model.bridge.parameters())


def test_unknown_model_name_gives_one_clear_error():
    with pytest.raises(ModelLoadError) as err:
        load_model("no-such-org/no-such-model-xyz")
    message = str(err.value)
    assert "no-such-org/no-such-model-xyz" in message
    assert "smollm2-135m-instruct" in message  # says what does work
    assert "\n" not in message


def test_local_directory_loads_like_a_hub_model(tmp_path, tiny_llama):
    # A user's own weights: a directory with config, weights and tokenizer (saved before
    # any bridge wraps the model, as a user's checkpoint would be).
    from workbench.model.loading import _build_tiny

    hf, tokenizer, _, _ = _build_tiny("tiny-llama")
    hf.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.source == "local"
    assert loaded.heads.shape == tiny_llama.heads.shape
    tokens = tiny_llama.bridge.to_tokens("abc")
    with torch.no_grad():
        assert torch.allclose(loaded.bridge(tokens), tiny_llama.bridge(tokens), atol=1e-5)


def test_directory_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="local directory"):
        load_model(str(tmp_path))


def test_available_models_lists_the_embedded_default():
    assert available_models()[0] == "smollm2-135m-instruct"


def test_missing_directory_says_so():
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model("/no/such/model/dir")
