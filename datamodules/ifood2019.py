"""iFood 2019 (FGVC6): ``train_info.csv`` / ``val_info.csv`` (``image_name,label``), ``test_info.csv``,
``class_list.txt``, images in ``train_set/``, ``val_set/``, ``test_set/``."""

from __future__ import annotations

from core.data import DataFormatError, resolve_inside
from datamodules.fgvc.base import FineGrainedDataModule, parse_int, read_csv_rows


class IFood2019DataModule(FineGrainedDataModule):
    """The info CSVs have no header (a first row ``image_name,label`` or ``img_name,label`` is
    skipped); ``class_list.txt`` holds ``<label> <name>`` per line, labels 0 .. C-1."""

    def read_class_names(self) -> list[str]:
        path = self.root / "class_list.txt"
        if not path.exists():
            raise FileNotFoundError(f"{path}: expected the iFood class list, but it does not exist")
        names = {}
        for line, text in enumerate(path.read_text().splitlines(), start=1):
            if not text.strip():
                continue
            label, _, name = text.strip().partition(" ")
            label = parse_int(label, path, line, "label")
            if label in names:
                raise DataFormatError(path, f"label {label} listed twice", line)
            names[label] = name.strip() or str(label)
        if sorted(names) != list(range(len(names))):
            raise DataFormatError(path, f"labels must be 0 .. {len(names) - 1}")
        self.label_ids = [str(i) for i in range(len(names))]
        return [names[i] for i in range(len(names))]

    def _rows(self, split: str) -> list[tuple[int, list[str]]]:
        path = self.root / f"{split}_info.csv"
        rows = read_csv_rows(path, None, f"iFood {split} list")
        if rows and rows[0][1][0].strip() in ("image_name", "img_name"):
            rows = rows[1:]
        return rows

    def read_labeled(self, split: str):
        path = self.root / f"{split}_info.csv"
        paths, labels, ids = [], [], []
        for line, row in self._rows(split):
            if len(row) != 2:
                raise DataFormatError(path, f"expected 2 fields (image_name,label), found {len(row)}", line)
            label = parse_int(row[1], path, line, "label")
            if not 0 <= label < len(self.label_ids):
                raise DataFormatError(path, f"unknown label {label} (class_list.txt has {len(self.label_ids)})", line)
            paths.append(resolve_inside(self.root / f"{split}_set", row[0], path, line))
            labels.append(label)
            ids.append(row[0])
        return paths, labels, ids

    def read_test(self):
        path = self.root / "test_info.csv"
        rows = self._rows("test")
        paths = [resolve_inside(self.root / "test_set", row[0], path, line) for line, row in rows]
        return paths, [row[0] for _, row in rows]
