"""Figures of merit and their presentation: metrics, calibration maths, plots, the Table 1
report and experiment tracking (W&B, TensorBoard)."""
