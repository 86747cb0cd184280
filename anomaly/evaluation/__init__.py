"""Evaluation of anomaly scores: thresholds fitted on validation (`thresholds`) and the test
metrics taken with them (`metrics`)."""

# every metric a run reports (compute_metrics), in the order tables show them; `threshold` is the
# fitted threshold's value, recorded beside them
METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "f1", "f1_inlier", "fpr95", "detection_error", "precision",
               "recall", "precision_inlier", "recall_inlier", "threshold")
