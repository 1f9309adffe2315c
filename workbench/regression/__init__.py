"""Function regression in context (after Garg et al. 2022, "What Can Transformers Learn
In-Context?"): a small transformer reads x1, y1, ..., x_q and predicts y_q for a function
drawn fresh for every sequence. The modules are one concept each:

families    seeded samplers of task families (linear, sparse linear, 2-layer ReLU net)
            and their options (noisy y, skewed covariance of x, orthogonal query)
model       the GPT-style transformer on float tokens, with TransformerLens hook points
            so :class:`workbench.model.heads.HeadAccess` reads it per head
baselines   least squares, Lasso, 3-nearest neighbours, averaging: a prediction per prefix
training    AdamW with warmup and cosine decay, optional curriculum, atomic safetensors
            checkpoints, resume
curves      squared error / d against the number of in-context examples, with 95% bands
task_vectors  LTV, FV and TV on the trained model, in the LTV paper's setting: vectors
            built from a training-length prompt of the same function edit a longer one
benchmark   the shifts (beyond the training length, noisy y, skewed x, orthogonal query)
            and every method and baseline measured under them
bundled     the shipped models (results/regression) and benchmark tables (analyses/results)
"""
