import torch

from workbench import inference

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


def test_generation_hooks_act_on_the_prompt_pass_only(tiny_llama):
    calls = []

    def count(z, hook):
        calls.append(z.shape[1])
        return z

    hook = (tiny_llama.heads.z_name(0), count)
    inference.generate(tiny_llama, PROMPTS, [hook], max_new_tokens=5, stop="\x00never")
    assert len(calls) == 1 and calls[0] > 1


def test_first_logits_equal_last_logits(tiny_model):
    gen = inference.generate(tiny_model, PROMPTS, max_new_tokens=1)
    assert torch.allclose(gen.first_logits, inference.last_logits(tiny_model, PROMPTS), atol=1e-5)
    assert gen.prompt_tokens == [len(tiny_model.bridge.to_tokens(p)[0]) for p in PROMPTS]


def test_answer_first_token_keeps_the_leading_space(tiny_llama):
    token = inference.answer_first_token(tiny_llama, " cold")
    assert tiny_llama.tokenizer.decode([token]) == " "
