"""What a trained model is used for: the run-metadata record, checkpoints, predictors
(checkpoint or ONNX), predict, export, explain and the model card.

Nothing here imports training code: predicting needs neither Lightning nor W&B nor matplotlib.
"""
