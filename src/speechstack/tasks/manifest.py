"""Any labelled audio listed in a CSV or Excel sheet: speech sentiment and the rest.

::

    <data_dir>/<file>            manifest.csv / .tsv / .xlsx: one row per clip
    <data_dir>/<paths in it>     audio files, relative to the sheet's folder

The sheet needs a path column and a label column (names configurable); a speaker column
makes folds speaker-independent (without one every clip is its own group, and the folds
are then only stratified). A transcript column and further columns named in
``group_columns`` are carried along (reports break accuracy down by them). Labels are
binary or multi-class: the sorted distinct labels, or the order given in ``labels``.
Paths are resolved relative to the sheet and refused if they leave its folder.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from speechstack.params.tasks import ManifestParams
from speechstack.tasks import MANIFEST_COLUMNS, TASKS, DatasetError, Task, manifest_frame

EXCEL_SUFFIXES = {".xlsx", ".xlsm"}
RESERVED = set(MANIFEST_COLUMNS)


def read_sheet(
    path: Path, sheet: str | None = None, missing: str = "manifest not found (task.params.file)"
) -> pl.DataFrame:
    """A manifest sheet (``.csv``, ``.tsv``, ``.xlsx``) as text columns; a missing
    (``missing`` says what it is) or unreadable file is a DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"{path}: {missing}")
    try:
        if path.suffix.lower() in EXCEL_SUFFIXES:
            return pl.read_excel(path, sheet_name=sheet, engine="openpyxl", infer_schema_length=0)
        separator = "\t" if path.suffix.lower() == ".tsv" else ","
        return pl.read_csv(path, separator=separator, infer_schema_length=0)
    except Exception as error:  # polars/openpyxl raise many kinds for a bad sheet
        raise DatasetError(f"{path}: cannot read the manifest ({error})") from error


def resolve_audio(sheet_path: Path, relative: str, row: int) -> Path:
    """The audio file of a sheet row (``row``: 1-based, for the message); refused when it
    leaves the sheet's folder or does not exist."""
    folder = sheet_path.parent.resolve()
    resolved = (folder / relative).resolve()
    if not resolved.is_relative_to(folder):
        raise DatasetError(
            f"{sheet_path}: row {row}: path {relative!r} leaves the manifest's folder "
            f"{folder}; paths must stay inside it"
        )
    if not resolved.is_file():
        raise DatasetError(f"{sheet_path}: row {row}: audio file {resolved} not found")
    return resolved


@TASKS.register("manifest")
class Manifest(Task):
    params_schema = ManifestParams
    params: ManifestParams

    def __init__(self, data_dir: Path, params: ManifestParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self.sheet_path = self.data_dir / params.file
        self.table = self._read_sheet()
        found = sorted(set(self.table["_label"].to_list()))
        if params.labels is None:
            if len(found) < 2:
                raise DatasetError(f"{self.sheet_path}: needs at least two labels, found {found}")
            self._labels = found
        else:
            unknown = sorted(set(found) - set(params.labels))
            if unknown:
                row = self.table.filter(pl.col("_label").is_in(unknown))["_row"][0]
                raise DatasetError(
                    f"{self.sheet_path}: row {row}: label {unknown[0]!r} is not in "
                    f"task.params.labels {params.labels} ({len(unknown)} unknown labels)"
                )
            self._labels = list(params.labels)

    @property
    def labels(self) -> list[str]:
        return self._labels

    def report_columns(self) -> list[str]:
        columns = list(self.params.group_columns)
        return [*columns, "group"] if self.params.speaker_column else columns

    def _read_sheet(self) -> pl.DataFrame:
        """The sheet with ``_row`` (1-based data row, as a spreadsheet shows it minus the
        header), ``_path`` and ``_label`` columns, checked."""
        path, params = self.sheet_path, self.params
        table = read_sheet(path, params.sheet)
        wanted = [
            params.path_column,
            params.label_column,
            *[c for c in (params.speaker_column, params.transcript_column) if c],
            *params.group_columns,
        ]
        missing = [c for c in wanted if c not in table.columns]
        if missing:
            raise DatasetError(
                f"{path}: missing columns {missing}; the sheet has {table.columns} "
                "(set task.params.path_column / label_column / speaker_column ...)"
            )
        clashing = sorted(set(params.group_columns) & RESERVED)
        if clashing:
            raise DatasetError(f"group_columns {clashing} clash with manifest columns; rename them")
        if table.is_empty():
            raise DatasetError(f"{path}: the manifest has no rows")
        table = table.with_row_index("_row", offset=1)
        for column in [params.path_column, params.label_column]:
            blank = pl.col(column).is_null() | (pl.col(column).str.strip_chars() == "")
            empty = table.filter(blank)
            if not empty.is_empty():
                raise DatasetError(f"{path}: row {empty['_row'][0]}: empty {column!r}")
        return table.with_columns(
            pl.col(params.path_column).str.strip_chars().alias("_path"),
            pl.col(params.label_column).str.strip_chars().alias("_label"),
        )

    def train_manifest(self) -> pl.DataFrame:
        params, table = self.params, self.table
        duplicated = table.filter(pl.col("_path").is_duplicated())
        if not duplicated.is_empty():
            raise DatasetError(
                f"{self.sheet_path}: row {duplicated['_row'][0]}: "
                f"{duplicated['_path'][0]!r} is listed more than once"
            )
        rows: dict[str, list] = {
            "fname": [],
            "path": [],
            "label": [],
            "target": [],
            "group": [],
        }
        for row, relative, label in table.select("_row", "_path", "_label").iter_rows():
            rows["fname"].append(relative)
            rows["path"].append(str(resolve_audio(self.sheet_path, relative, row)))
            rows["label"].append(label)
            rows["target"].append(label)
        if params.speaker_column:
            speakers = table[params.speaker_column]
            if speakers.is_null().any():
                row = table.filter(speakers.is_null())["_row"][0]
                raise DatasetError(f"{self.sheet_path}: row {row}: empty {params.speaker_column!r}")
            rows["group"] = speakers.str.strip_chars().to_list()
        else:
            rows["group"] = [f"clip:{name}" for name in rows["fname"]]
        if params.transcript_column:
            rows["transcript"] = table[params.transcript_column].to_list()
        for column in params.group_columns:
            rows[column] = table[column].fill_null("").to_list()
        return manifest_frame(rows, MANIFEST_COLUMNS)
