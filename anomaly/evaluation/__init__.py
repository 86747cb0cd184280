"""Evaluation of anomaly scores: thresholds fitted on validation (`thresholds`) and the test
metrics taken with them (`metrics`); the components a method's module hands its gathered scores
(`gather`) to: the post-processor (`post_processor`: the threshold, fitted and applied) and the
evaluator (`evaluator`: the metrics)."""

# every metric a run reports (compute_metrics), in the order tables show them; `threshold` is the
# fitted threshold's value, recorded beside them
METRIC_KEYS = ("auroc", "aupr_in", "aupr_out", "f1", "f1_inlier", "fpr95", "detection_error", "precision",
               "recall", "precision_inlier", "recall_inlier", "threshold")
# what each is, as tables say it (an F1, precision or recall names its positive class)
METRIC_LABELS = {"auroc": "AUROC", "aupr_in": "AUPR-in (normals positive)", "aupr_out": "AUPR-out (anomalies positive)",
                 "f1": "F1 (anomalies positive)", "f1_inlier": "F1 (inliers positive)",
                 "fpr95": "FPR at 95 % TPR", "detection_error": "detection error",
                 "precision": "precision (anomalies positive)", "recall": "recall (anomalies positive)",
                 "precision_inlier": "precision (inliers positive)", "recall_inlier": "recall (inliers positive)",
                 "threshold": "threshold"}
