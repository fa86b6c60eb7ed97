"""Evaluation: Dice, IoU, precision, recall, HD95, ASD, surface Dice per case and class (MONAI semantics)."""

from segbalance.evaluation.folders import FolderResult, evaluate_folders
from segbalance.evaluation.metrics import FLAGS, METRICS, ClassMetrics, evaluate_case, image_diagonal_mm
from segbalance.evaluation.report import markdown_table, summarize, write_outputs

__all__ = ["FLAGS", "METRICS", "ClassMetrics", "FolderResult", "evaluate_case", "evaluate_folders",
           "image_diagonal_mm", "markdown_table", "summarize", "write_outputs"]
