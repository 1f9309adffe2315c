"""The methods: one module each, the math readable top to bottom, and this registry.

    tv    TV    replace the residual after one layer with a mean k-shot residual
    fv    FV    add the summed outputs of the most causal heads after one layer
    ltv   LTV   add a learned weighted sum of head outputs after every layer
    site  SITE  mix a task embedding into every head's output with learned weights
    atv   ATV   add per-query vectors, written by a small model S from the query, after every layer

Every method keeps the contract of :class:`workbench.methods.base.Method` (fit, intervention,
head map, summary, optional verbs; the run codec reads its fields). They share ingredients
through their own modules, never by importing each other:

    settings     a setting's declaration: default, bounds, help (Config fields)
    activations  mean activations over k-shot prompts (the task embedding), PromptsConfig
    queries      zero-shot queries cached once and scored at the last token
    selection    layer sweeps and choice on the selection split; the top-k heads of a map
    training     the fit loop of the methods that learn parameters, LearnedConfig

:data:`METHODS` is the only list of methods: the CLI, the scripts, the pages and the tests
take it from here. Adding a method is one module and one line below (README, "Adding a method").
"""

from __future__ import annotations

from workbench.methods.atv import AdaptiveTaskVector
from workbench.methods.base import HeadMap, Method, MethodConfig, Progress
from workbench.methods.fv import FunctionVector
from workbench.methods.ltv import LearnableTaskVector
from workbench.methods.site import SoftInjection
from workbench.methods.tv import TaskVector

METHODS: dict[str, type[Method]] = {
    method.name: method
    for method in (TaskVector, FunctionVector, LearnableTaskVector, SoftInjection, AdaptiveTaskVector)
}

__all__ = ["METHODS", "HeadMap", "Method", "MethodConfig", "Progress", "get_method", "head_map_methods"]


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(METHODS)}.") from None


def head_map_methods() -> list[str]:
    """The methods that leave a per-head map: those whose map is a head selection (SITE's
    alpha, the reference of the head views) first, then the others in registry order."""
    mapped = [name for name, method in METHODS.items() if method.head_map_info is not None]
    return sorted(mapped, key=lambda name: not METHODS[name].head_map_info.is_selection)
