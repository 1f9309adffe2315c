"""Task Vector Workbench: how language models carry a task from in-context examples into
their activations. The folders name the architecture (README.md, "Layout"):

model/        loading a model by name, per-head access (hook names, W_O), inference
tasks/        tasks and their splits, task files, prompt templates
interventions the vocabulary every method's effect is written in: where, what, when
scoring       answer scoring: first-token targets, losses, metrics
methods/      one module per method (TV, FV, LTV, SITE), their shared ingredients, the registry
experiments/  evaluation, grids, comparison, head maps, transfer, measurement
store/        saved runs: the store, the metadata schema, the codec
regression/   the function-regression benchmark: a trained in-context regressor, LTV / FV / TV on it
atomic        atomic writes of files and folders
cli           python -m workbench ...

The math of every method is in docs/methods.md.
"""

__version__ = "0.2.0"
