"""Task Vector Workbench: how language models carry a task from in-context examples into
their activations. See README.md; the modules are one concept each:

models      load a model by name and wrap it in TransformerLens' TransformerBridge
heads       read and write per-head activations (hook_z, W_O blocks, residual stream)
tasks       built-in and user task files, validation, fixed splits
prompts     prompt templates and k-shot prompts
inference   batched forward passes with hooks, greedy decoding
evaluation  zero-shot / k-shot / intervened evaluation, metrics as DataFrames
"""

__version__ = "0.1.0"
