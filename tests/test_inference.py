from dataclasses import dataclass, field

import torch

from workbench import scoring
from workbench.interventions import Intervention
from workbench.model import inference

PROMPTS = ["abc -> cba\nxyz ->", "hello ->", "a much longer prompt than the others ->"]


def test_left_padding_does_not_change_last_token_logits(tiny_model):
    batched = inference.last_logits(tiny_model, PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        alone = inference.last_logits(tiny_model, [prompt])
        assert torch.allclose(batched[i], alone[0], atol=1e-4)


def test_generation_matches_step_by_step_greedy_decoding(tiny_model):
    gen = inference.generate(tiny_model, PROMPTS[:2], max_new_tokens=4, stop="\x00never")
    assert gen.new_tokens.shape == (2, 4)
    for i, prompt in enumerate(PROMPTS[:2]):
        tokens = tiny_model.bridge.to_tokens(prompt)
        for step in range(4):
            with torch.no_grad():
                nxt = tiny_model.bridge(tokens)[0, -1].argmax()
            assert int(nxt) == int(gen.new_tokens[i, step])
            tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)


@dataclass(frozen=True, eq=False)
class Counting(Intervention):
    """The same edits, their hooks recording each call's phase and positions."""

    calls: list = field(default_factory=list)

    def hooks(self, model, phase="prompt"):
        def counted(fn):
            def hook(x, hook):
                self.calls.append((phase, x.shape[1]))
                return fn(x, hook)
            return hook

        return [(name, counted(fn)) for name, fn in super().hooks(model, phase)]


def test_generation_asks_each_phase_for_its_hooks(tiny_llama):
    from workbench.interventions import When, add_to_residual

    zero = torch.zeros(1, tiny_llama.heads.shape.d_model)
    prompt_only = Counting("zero", (add_to_residual(zero, (0,)),))
    inference.generate(tiny_llama, PROMPTS, prompt_only, max_new_tokens=5, stop="\x00never")
    assert len(prompt_only.calls) == 1 and prompt_only.calls[0][0] == "prompt" and prompt_only.calls[0][1] > 1
    every_token = Counting("zero", (add_to_residual(zero, (0,), when=When.GENERATED),))
    inference.generate(tiny_llama, PROMPTS, every_token, max_new_tokens=5, stop="\x00never")
    assert [phase for phase, _ in every_token.calls] == ["prompt"] + ["decode"] * 4
    assert all(width == 1 for phase, width in every_token.calls if phase == "decode")


def test_first_logits_equal_last_logits(tiny_model):
    gen = inference.generate(tiny_model, PROMPTS, max_new_tokens=1)
    assert torch.allclose(gen.first_logits, inference.last_logits(tiny_model, PROMPTS), atol=1e-5)
    assert gen.prompt_tokens == [len(tiny_model.bridge.to_tokens(p)[0]) for p in PROMPTS]


def test_answer_first_token_keeps_the_leading_space(tiny_llama):
    token = scoring.answer_first_token(tiny_llama, " cold")
    assert tiny_llama.tokenizer.decode([token]) == " "
