"""A slow, plain reference for the cached, batched scoring the methods use: one query at a
time, the whole prompt and the teacher-forced answer tokens in one forward pass, no cache,
no padding."""

from __future__ import annotations

import torch

from workbench import scoring
from workbench.tasks.prompts import get_template


@torch.no_grad()
def full_forward(model, template, pairs, intervention=None, objective="first_token", prompts=None):
    """Per query: (summed cross-entropy, all-argmax-right, probability) of the answer tokens
    ``objective`` reads, the intervention acting from the prompt's last token."""
    template = get_template(template)
    prompts = prompts or [template.format_query(x) for x, _ in pairs]
    rows = []
    for prompt, (_, y) in zip(prompts, pairs):
        prompt_ids = model.bridge.to_tokens(prompt)  # (1, T)
        answer = scoring.answer_tokens(model.tokenizer, y, template.separator)
        read = answer.first_ids if objective == "first_token" else answer.ids
        ids = torch.cat([prompt_ids, torch.tensor([read[:-1]], dtype=prompt_ids.dtype)], dim=1)
        end = prompt_ids.shape[1] - 1
        hooks = intervention.hooks(model, "prompt", prompt_end=end) if intervention is not None else []
        logits = model.bridge.run_with_hooks(ids, fwd_hooks=hooks)[0, end:].float()  # (len(read), vocab)
        targets = torch.tensor(read)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        hit = bool((logits.argmax(-1) == targets).all())
        prob = float(logits.softmax(-1).gather(1, targets[:, None]).prod())
        rows.append((loss, hit, prob))
    return rows
