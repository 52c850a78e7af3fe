"""The FGVC6 competitions' graders and their Kaggle submission files (numpy and the standard library
only, so ``python -m tasks.fgvc.evaluate`` scores a CSV without torch).

Each grader follows its competition's public evaluation page:

- iNaturalist 2019 and Herbarium 2019: top-1 error, e = 1/N sum_i [l_i1 != g_i] on the first
  predicted label l_i1 of each image (inat_comp README, 2019: "average top-1 error").
- iFood 2019 and iMaterialist Product 2019: top-3 error, e_i = min_j d(l_ij, g_i) over the first 3
  predicted labels, d = 0 if equal else 1, averaged over images (iFood_2019 / imaterialist-product-2019
  READMEs).
- iMet Collection 2019: the F2 score per sample (beta = 2 weighs recall higher than precision),
  F2 = 5 p r / (4 p + r), averaged over samples (Kaggle: "mean F2 score"); a sample with no
  true positive scores 0.
- iWildCam 2019: macro F1 = mean over labels of 2 p r / (p + r), over the labels that occur in the
  solution or the submission (scikit-learn's ``f1_score(average="macro")``, which the Kaggle metric
  uses); a label with p + r = 0 scores 0.
- iCassava 2019: categorization accuracy = 1/N sum_i [l_i = g_i].
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --- the formulas --------------------------------------------------------------------------------


def top_k_error(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Mean over images of 1 - [g_i in first k of the ranked labels]; ``ranked`` is (N, >=k)."""
    ranked = np.asarray(ranked).reshape(len(targets), -1)[:, :k]
    targets = np.asarray(targets).reshape(-1, 1)
    if len(targets) == 0:
        raise ValueError("top-k error of zero images is undefined")
    return float(1.0 - (ranked == targets).any(axis=1).mean())


def fbeta_per_sample(predicted: np.ndarray, truth: np.ndarray, beta: float = 2.0) -> np.ndarray:
    """F-beta of each sample's predicted label set against its true set (both (N, C) 0/1).

    F = (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp), i.e. (1 + b^2) p r / (b^2 p + r); 0 when tp = 0."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    tp = (predicted & truth).sum(1).astype(np.float64)
    fp = (predicted & ~truth).sum(1)
    fn = (~predicted & truth).sum(1)
    b2 = beta * beta
    denominator = (1 + b2) * tp + b2 * fn + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tp > 0, (1 + b2) * tp / np.maximum(denominator, 1e-12), 0.0)


def sample_f2(predicted: np.ndarray, truth: np.ndarray) -> float:
    """iMet's score: F2 per sample, averaged over samples."""
    if len(truth) == 0:
        raise ValueError("F2 of zero samples is undefined")
    return float(fbeta_per_sample(predicted, truth, 2.0).mean())


def best_threshold(scores: np.ndarray, truth: np.ndarray, grid: Sequence[float]) -> tuple[float, float]:
    """The threshold of ``grid`` with the highest sample-averaged F2 (first on ties), and that F2.

    A sample with no score above the threshold keeps its single highest-scored label (an empty
    prediction can only score 0)."""
    best = (float(grid[0]), -1.0)
    for t in grid:
        score = sample_f2(threshold_predictions(scores, t), truth)
        if score > best[1]:
            best = (float(t), score)
    return best


def threshold_predictions(scores: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 label sets: scores above ``threshold``, else the top-scored label alone."""
    scores = np.asarray(scores, dtype=np.float64)
    predicted = scores > threshold
    empty = ~predicted.any(1)
    if empty.any():
        predicted[np.flatnonzero(empty), scores[empty].argmax(1)] = True
    return predicted


def macro_f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """Mean F1 over the labels that occur (tp + fp + fn > 0); F1 = 2 tp / (2 tp + fp + fn)."""
    tp, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn))
    present = (tp + fp + fn) > 0
    if not present.any():
        raise ValueError("macro F1 with no labels in the solution or the submission is undefined")
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return float(f1.mean())


def macro_f1(predicted: np.ndarray, targets: np.ndarray) -> float:
    """iWildCam's score from label vectors (any hashable labels)."""
    predicted, targets = np.asarray(predicted), np.asarray(targets)
    labels = np.union1d(predicted, targets)
    tp = np.array([np.sum((predicted == c) & (targets == c)) for c in labels])
    fp = np.array([np.sum((predicted == c) & (targets != c)) for c in labels])
    fn = np.array([np.sum((predicted != c) & (targets == c)) for c in labels])
    return macro_f1_from_counts(tp, fp, fn)


def accuracy(predicted: np.ndarray, targets: np.ndarray) -> float:
    predicted, targets = np.asarray(predicted), np.asarray(targets)
    if len(targets) == 0:
        raise ValueError("accuracy of zero images is undefined")
    return float((predicted == targets).mean())


# --- the competitions: submission headers and scoring -------------------------------------------


@dataclass(frozen=True)
class Competition:
    """A Kaggle competition's submission layout and score. ``kind``: ``topk`` (k labels, error),
    ``multilabel`` (label set, F2), ``macro_f1`` or ``accuracy`` (one label)."""

    name: str
    id_column: str
    label_column: str
    kind: str
    k: int = 1
    higher_is_better: bool = False
    metric_name: str = ""
    # other (id, label) column names the competition's own pages or files use; read, never written
    other_headers: tuple[tuple[str, str], ...] = ()

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return ((self.id_column, self.label_column), *self.other_headers)


# Headers and id forms as each competition published them (docs/fgvc.md, "Submission files", names
# the source of each): the first pair is what a run writes.
COMPETITIONS: dict[str, Competition] = {
    "inaturalist2019": Competition("inaturalist2019", "id", "predicted", "topk", 1, False, "top1_error"),
    "herbarium2019": Competition("herbarium2019", "Id", "Category", "topk", 1, False, "top1_error"),
    "ifood2019": Competition(
        "ifood2019", "img_name", "label", "topk", 3, False, "top3_error", (("image_name", "label1 label2 label3"),)
    ),
    "imaterialist_product2019": Competition(
        "imaterialist_product2019", "id", "predicted", "topk", 3, False, "top3_error"
    ),
    "imet2019": Competition("imet2019", "id", "attribute_ids", "multilabel", 0, True, "f2"),
    "iwildcam2019": Competition(
        "iwildcam2019", "Id", "Predicted", "macro_f1", 1, True, "macro_f1", (("Id", "Category"),)
    ),
    "icassava2019": Competition("icassava2019", "Id", "Category", "accuracy", 1, True, "accuracy"),
}


def competition(name: str) -> Competition:
    if name not in COMPETITIONS:
        raise ValueError(f"unknown competition {name!r}; choose one of {sorted(COMPETITIONS)}")
    return COMPETITIONS[name]


def submission_text(comp: Competition, ids: Sequence[str], labels: Sequence[Sequence[str]]) -> str:
    """The CSV text of a submission: header ``<id column>,<label column>``, one row per test item,
    each item's labels joined by spaces (k ranked labels, a label set, or one label)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([comp.id_column, comp.label_column])
    for item, item_labels in zip(ids, labels):
        writer.writerow([item, " ".join(str(v) for v in item_labels)])
    return buffer.getvalue()


def is_index_column(name: str) -> bool:
    """A pandas ``to_csv(index=True)`` column: an empty name (``,Id,Category``) or ``Unnamed: <n>``."""
    name = name.strip()
    return name == "" or name.startswith("Unnamed:")


def header_columns(header: Sequence[str] | None, comp: Competition) -> tuple[int, int] | None:
    """Positions of the (id, label) columns of one of the competition's headers, in any order and
    after any leading unnamed index columns; None when the header is none of them."""
    names = [h.strip() for h in header or ()]
    start = 0
    while start < len(names) - 2 and is_index_column(names[start]):
        start += 1
    names = names[start:]
    for id_name, label_name in comp.headers:
        if len(names) == 2 and set(names) == {id_name, label_name} and id_name != label_name:
            return start + names.index(id_name), start + names.index(label_name)
    return None


def read_label_file(path: str | Path, comp: Competition, what: str) -> dict[str, list[str]]:
    """{id: labels} from a submission or solution CSV with one of the competition's headers (a
    leading unnamed index column, as pandas writes one, is skipped).

    Raises ValueError naming the file and line for a wrong header, a short row or a repeated id."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} file does not exist")
    out: dict[str, list[str]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        columns = header_columns(header, comp)
        if columns is None:
            accepted = " or ".join(repr(",".join(h)) for h in comp.headers)
            raise ValueError(f"{path}:1: {what} header must be {accepted}, found {header!r}")
        id_at, label_at = columns
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} columns ({','.join(header)}), found {row!r}")
            key = row[id_at].strip()
            if key in out:
                raise ValueError(f"{path}:{line}: id {key!r} appears twice")
            out[key] = row[label_at].split()
    return out


def score_files(comp: Competition, submission: str | Path, solution: str | Path) -> float:
    """Score a submission CSV against a solution CSV in the same layout (the solution holds the true
    label, or the true label set for iMet). Every solution id must be in the submission, and every
    submission id in the solution."""
    predicted = read_label_file(submission, comp, "submission")
    truth = read_label_file(solution, comp, "solution")
    missing = [key for key in truth if key not in predicted]
    if missing:
        raise ValueError(f"{submission}: {len(missing)} ids of the solution are missing, e.g. {missing[:3]}")
    extra = [key for key in predicted if key not in truth]
    if extra:  # Kaggle refuses a submission with rows it cannot score: another split, or garbled ids
        raise ValueError(f"{submission}: {len(extra)} ids are not in the solution, e.g. {extra[:3]}")
    keys = list(truth)
    if comp.kind == "multilabel":
        vocabulary = sorted({v for key in keys for v in truth[key] + predicted[key]})
        index = {v: i for i, v in enumerate(vocabulary)}
        pred = np.zeros((len(keys), len(vocabulary)), dtype=bool)
        true = np.zeros_like(pred)
        for row, key in enumerate(keys):
            pred[row, [index[v] for v in predicted[key]]] = True
            true[row, [index[v] for v in truth[key]]] = True
        return sample_f2(pred, true)
    for key in keys:
        if len(truth[key]) != 1:
            raise ValueError(f"{solution}: id {key!r} must have exactly one true label, found {truth[key]}")
    targets = np.array([truth[key][0] for key in keys], dtype=object)
    if comp.kind == "topk":
        ranked = np.array([(predicted[key] + [None] * comp.k)[: comp.k] for key in keys], dtype=object)
        return top_k_error(ranked, targets, comp.k)
    first = np.array([(predicted[key] or [None])[0] for key in keys], dtype=object)
    if comp.kind == "macro_f1":
        return macro_f1(first.astype(str), targets.astype(str))
    return accuracy(first, targets)
