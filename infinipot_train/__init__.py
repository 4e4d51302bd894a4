"""Training of the built-in model and its held-out evaluation: the top layer (docs/architecture.md).

Uses the engine (`infinipot`) and the synthetic world of `infinipot_eval`; nothing below imports it.
Import the module you need (`infinipot_train.train`, `.train_data`, `.model_eval`, `.vision_aux`).
"""
