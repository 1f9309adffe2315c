"""Answer scoring (workbench/scoring.py): the first token that carries an answer, the
end-of-answer token, and the three metrics, with tokenizers of three families built offline
(byte-level with no merges, GPT-2-style byte-level BPE, Llama-style SentencePiece BPE) and
with every built-in task's answers."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from workbench import scoring
from workbench.tasks.files import list_tasks, load_task

CORPUS = [
    "Q: hot\nA: cold\n\nQ: 97\nA: 98\n\nQ: France\nA: Paris\n\n",
    "the cold river and the hot sun; 12 34 56 78 90 97 1,000 Washington, D.C.\n",
] * 50 + [  # every character the built-in answers use, as a real tokenizer's vocabulary has them
    " ".join(y for name in list_tasks() for _, y in load_task(name).pairs)
]


def gpt2_style() -> PreTrainedTokenizerFast:
    """Byte-level BPE with merges, spaces glued to the next word ("Ġcold")."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    )
    return PreTrainedTokenizerFast(tokenizer_object=core)


def llama_style() -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE: spaces as "▁", digits one by one, so " 97" is "▁", "9", "7"."""
    core = Tokenizer(models.BPE(byte_fallback=True))
    core.normalizer = normalizers.Replace(" ", "▁")
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("▁", "merged_with_next"), pre_tokenizers.Split("\n", "isolated"),
         pre_tokenizers.Digits(individual_digits=True)]
    )
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")


@pytest.fixture(scope="module", params=["bytes", "gpt2", "llama"])
def tokenizer(request, tiny_llama):
    return {"bytes": lambda: tiny_llama.tokenizer, "gpt2": gpt2_style, "llama": llama_style}[request.param]()


def _pieces(tokenizer, ids) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def test_the_first_token_carries_the_answer_in_every_tokenizer_family(tokenizer):
    for answer in ("cold", "97", "Paris", "Washington, D.C.", "1,000", "7"):
        tokens = scoring.answer_tokens(tokenizer, answer, "\n\n")
        pieces = _pieces(tokenizer, tokens.ids)
        assert pieces[tokens.first].strip(), (answer, pieces)  # never a bare space
        assert all(not p.strip() for p in pieces[: tokens.first])  # only whitespace before it
        assert "\n" in pieces[tokens.end] and tokens.end == len(tokens.ids) - 1  # the end-of-answer token
        assert "".join(pieces[: tokens.end]).strip() == answer  # the tokens before it are the answer
        assert answer.startswith(pieces[tokens.first].strip()[:1])


def test_digit_answers_are_a_bare_space_then_the_digit_in_llama_style():
    tokenizer = llama_style()
    tokens = scoring.answer_tokens(tokenizer, "97", "\n")
    assert _pieces(tokenizer, tokens.ids[:3]) == [" ", "9", "7"] and tokens.first == 1
    assert _pieces(tokenizer, tokens.first_ids) == [" ", "9"]
    gpt2 = gpt2_style()
    assert scoring.answer_tokens(gpt2, "cold", "\n").first == 0  # " cold" is one token there


def test_no_built_in_task_scores_a_whitespace_token(tokenizer):
    for name in list_tasks():
        for _, y in load_task(name).pairs:
            tokens = scoring.answer_tokens(tokenizer, y, "\n\n")
            assert tokenizer.decode([tokens.target]).strip(), (name, y)


def test_an_answer_glued_to_its_line_break_still_counts():
    class Glued:  # a tokenizer that writes " Paris\n" as one token
        vocab = {" Paris\n": 0, "\n": 1}

        def __call__(self, text, add_special_tokens=False):
            return type("E", (), {"input_ids": [0, 1] if text == " Paris\n\n" else [0]})()

        def decode(self, ids):
            return {0: " Paris\n", 1: "\n"}[ids[0]]

    tokens = scoring.answer_tokens(Glued(), "Paris", "\n\n")
    assert tokens.first == tokens.end == 0 and tokens.ids == (0,)


def test_a_bare_space_is_no_first_token_hit(tiny_llama):
    tokens = scoring.answer_tokens(tiny_llama.tokenizer, "97", "\n\n")  # " ", "9", "7", "\n", "\n"
    space, nine, eight = (
        tiny_llama.tokenizer(t, add_special_tokens=False).input_ids[0] for t in (" ", "9", "8")
    )
    assert scoring.starts_with_answer([space, nine, eight], tokens)
    assert not scoring.starts_with_answer([space, eight], tokens)
    assert not scoring.starts_with_answer([space], tokens)  # stopped after the space


def test_prefix_match_needs_a_word_boundary():
    assert scoring.prefix_match(" bountiful, ladder", "bountiful")
    assert scoring.prefix_match(" Paris", "paris") and not scoring.prefix_match(
        " Paris", "paris", case_sensitive=True
    )
    assert not scoring.prefix_match(" 97", "9") and scoring.prefix_match(" 9.5", "9")
    assert not scoring.prefix_match(" bountifully", "bountiful")
    assert not scoring.prefix_match(" against", "bountiful") and not scoring.prefix_match("", "x")
    assert scoring.exact_match(" Paris\nQ: x", "paris") and not scoring.exact_match(" Paris, France", "paris")
