"""Evaluation: Dice, IoU, precision, recall, HD95, ASD, surface Dice per case and class (MONAI semantics),
lesion-level detection metrics (connected components matched one-to-one; :mod:`.lesions`), per-component
Dice/NSD (CC-Metrics; :mod:`.components`) and detection from score maps (FROC, AP, case AUROC as picai_eval;
:mod:`.detection`)."""

from segbalance.extras import require

require("monai", "cc3d", needed_for="segbalance.evaluation (metrics with MONAI's semantics, lesions)")

from segbalance.evaluation.components import per_component_metrics
from segbalance.evaluation.detection import CaseDetections, detect_case, detection_metrics
from segbalance.evaluation.folders import FolderResult, evaluate_folders
from segbalance.evaluation.lesions import LesionResult, evaluate_lesions
from segbalance.evaluation.metrics import FLAGS, METRICS, ClassMetrics, evaluate_case, image_diagonal_mm
from segbalance.evaluation.report import (
    lesion_markdown_table,
    markdown_table,
    summarize,
    summarize_lesions,
    write_outputs,
)

__all__ = ["FLAGS", "METRICS", "CaseDetections", "ClassMetrics", "FolderResult", "LesionResult",
           "detect_case", "detection_metrics", "evaluate_case", "evaluate_folders", "evaluate_lesions",
           "image_diagonal_mm", "lesion_markdown_table", "markdown_table", "per_component_metrics",
           "summarize",
           "summarize_lesions", "write_outputs"]
