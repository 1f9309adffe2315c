import pytest
import torch

from workbench.model.loading import load_model


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-gpt2"])
def tiny_model(request):
    """Both tiny families: Llama with grouped-query attention, GPT-2 with biases."""
    return load_model(request.param, device="cpu")


@pytest.fixture(scope="session")
def tiny_llama():
    return load_model("tiny-llama", device="cpu")


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M (dequantized once per machine, then cached)."""
    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices (the regression tests): one thread is faster and leaves a busy machine alone."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
