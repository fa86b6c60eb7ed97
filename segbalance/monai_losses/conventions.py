"""The MONAI convention flags of every registered loss as a table (docs/losses.md embeds it; a test keeps
the two in step): what ``include_background=False`` does, the ``reduction="none"`` shape, and which losses
have ``batch`` and all-gather batch statistics under DDP, and which have a multi-label (per-channel sigmoid)
form (nnU-Net's region datasets)."""

from __future__ import annotations

from pathlib import Path

from segbalance.monai_losses.base import BACKGROUND_SCOPES
from segbalance.monai_losses.inputs import NONE_SHAPES
from segbalance.monai_losses.registry import accepts_kwarg, loss_class, multilabel_names, names

__all__ = ["conventions_rows", "conventions_table", "write_conventions_table", "TABLE_MARKERS"]

#: the lines around the generated table in docs/losses.md
TABLE_MARKERS = ("<!-- conventions-table -->", "<!-- /conventions-table -->")

_SCOPE_TEXT = {
    "channels": "drops channel 0",
    "class_sum": "drops class 0's term (softmax over all)",
    "dice_term": "Dice term only (CE over all classes)",
    "terms": "passed to every term",
    "boundary_term": "boundary term only",
    "unused": "ignored, warns",
}


def conventions_rows() -> list[dict]:
    """One row per registered loss: name, ``include_background`` scope, ``none`` shape, ``batch``, DDP,
    multi-label form (``True``, ``False`` or ``"terms"`` for ``compound``: when all its terms have one)."""
    rows = []
    multilabel = set(multilabel_names())
    for name in names():
        cls = loss_class(name)
        scope = getattr(cls, "background_scope", "channels")
        style = getattr(cls, "none_style", "region")
        assert scope in BACKGROUND_SCOPES and style in NONE_SHAPES, name
        rows.append(
            {
                "loss": name,
                "include_background": _SCOPE_TEXT[scope],
                "none": NONE_SHAPES[style],
                "batch": accepts_kwarg(name, "batch"),
                "ddp": getattr(cls, "ddp_statistics", ""),
                "multilabel": "terms" if name == "compound" else name in multilabel,
            }
        )
    return rows


def conventions_table() -> str:
    """The markdown table of :func:`conventions_rows` (as in docs/losses.md)."""
    head = (
        '| loss | `include_background=False` | `reduction="none"` | shape as | `batch` | DDP-pooled '
        "| multi-label |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    labels = {True: "yes", False: "—", "terms": "if all terms"}
    for r in conventions_rows():
        shape, _, like = r["none"].partition(" — ")
        lines.append(
            f"| `{r['loss']}` | {r['include_background']} | {shape} | {like or 'segbalance'} "
            f"| {'yes' if r['batch'] else '—'} | {r['ddp'] or '—'} | {labels[r['multilabel']]} |"
        )
    return "\n".join(lines)


def write_conventions_table(path: str | Path = "docs/losses.md") -> bool:
    """Replace the table between :data:`TABLE_MARKERS` in ``path`` by :func:`conventions_table`; ``True``
    when the file changed. ``ValueError`` when the markers are missing."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = TABLE_MARKERS
    head, sep, rest = text.partition(start + "\n")
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise ValueError(f"{path} has no {start} … {end} block to regenerate")
    new = f"{head}{start}\n{conventions_table()}\n{end}{tail}"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


if __name__ == "__main__":  # python -m segbalance.monai_losses.conventions [docs/losses.md]
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else "docs/losses.md"
    print(f"{target}: {'updated' if write_conventions_table(target) else 'already up to date'}")
