"""Evaluation of anomaly scores: thresholds fitted on validation (`thresholds`) and the test
metrics taken with them (`metrics`)."""
