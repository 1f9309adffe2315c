"""The model side: loading a model by name (:mod:`~workbench.model.loading`), the one place
that reads and writes per-head activations (:mod:`~workbench.model.heads`), and batched
forward passes, decoding and prefix caching (:mod:`~workbench.model.inference`)."""
