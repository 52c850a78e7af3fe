"""core.data: the JSON reader's errors name file, line and column; the skipped-sample contract."""

from __future__ import annotations

import pytest

from core.data import CountsSkippedSamples, DataFormatError, read_json


def test_read_json_parses_and_names_file_line_and_column(tmp_path):
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good) == {"a": [1, 2]}
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(DataFormatError, match=r"bad.json:4: not valid JSON: Expecting value \(column 1\)") as err:
        read_json(bad)
    assert err.value.line == 4 and err.value.path == bad


def test_read_json_missing_and_undecodable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.json: expected the annotation file, but it does not exist"):
        read_json(tmp_path / "nope.json", "the annotation file")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(DataFormatError, match=r"latin.json: not UTF-8 text"):
        read_json(latin)


def test_counts_skipped_samples_is_the_attribute():
    class Skips:
        skipped_samples = 3

    class NeverSkips:
        pass

    assert isinstance(Skips(), CountsSkippedSamples)
    assert not isinstance(NeverSkips(), CountsSkippedSamples)
