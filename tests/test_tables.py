"""The table contract (esn.tables): every table kind round-trips its types through `write_table`/`read_table`,
in CSV and parquet, missing keys included; and the stages read and write their tables only through it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esn.tables import ALL, TABLES, column_types, conform, read_table, selection_variant, write_table

ROOT = Path(__file__).resolve().parents[1]


def _sample(kind: str) -> pd.DataFrame:
    """Four rows of `kind` with what a CSV loses: missing text keys (None and NaN), text that looks like a
    number, floats that need all 17 digits, NaN floats, and a value column beside the contract's."""
    types = column_types(kind)
    columns = {}
    for i, column in enumerate(TABLES[kind]):
        kind_of = types.get(column, float)
        if kind_of is str:
            columns[column] = [f"x{i}", None, "007", np.nan]
        elif kind_of is int:
            columns[column] = [-1, 0, 3, 12]
        else:
            columns[column] = [0.1 + 0.2, np.nan, 1e-17, -1 / 3]
    columns["recall_sad"] = [0.25, np.nan, 2 / 3, 1.0]
    return pd.DataFrame(columns)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("kind", sorted(TABLES))
def test_every_kind_round_trips_its_types(tmp_path, kind, suffix):
    frame = _sample(kind)
    path = tmp_path / f"{kind}.{suffix}"
    write_table(frame, path, kind)
    back = read_table(path, kind)
    pd.testing.assert_frame_equal(back, conform(frame, kind))
    types = column_types(kind)
    for column in TABLES[kind]:
        if types.get(column) is str:  # a missing key is "", text that looks like a number stays text
            assert back[column].tolist() == [back[column][0], "", "007", ""]
        elif types.get(column) is int:
            assert back[column].dtype == np.int64
        else:
            assert back[column].dtype == np.float64 and np.isnan(back[column][1])
            assert back[column][0] == 0.1 + 0.2 and back[column][2] == 1e-17  # bit-exact
    write_table(back, tmp_path / f"again.{suffix}", kind)  # a read table writes back unchanged
    assert (tmp_path / f"again.{suffix}").read_bytes() == path.read_bytes() or suffix == "parquet"
    pd.testing.assert_frame_equal(read_table(tmp_path / f"again.{suffix}", kind), back)


def test_alpha_nan_variant_text_and_layer_ints_in_a_metrics_table(tmp_path):
    """The cases a bare CSV round trip got wrong: the unmodified row's empty variant/control/target, alpha NaN
    beside numbers, variants as text, layers as integers."""
    frame = pd.DataFrame({"mode": ["none", "deactivate", "gain"], "variant": [None, "n30s1", ALL],
                          "control": [None, "selected", "random"], "target": [np.nan, "sad", "sad"],
                          "fraction": [0.0, 0.05, 0.05], "alpha": [np.nan, 0.0, 4.0], "layer": [-1, 2, -1],
                          "draw": [-1, -1, 0], "class": ["sad", "sad", "specificity"],
                          "delta_recall": [0.0, -0.4, 0.1], "lo": [0.0, -0.5, 0.0], "hi": [0.0, -0.3, 0.2]})
    write_table(frame, tmp_path / "d.csv", "delta_recall")
    back = read_table(tmp_path / "d.csv", "delta_recall")
    assert back["variant"].tolist() == ["", "n30s1", ALL] and back["control"].tolist() == ["", "selected", "random"]
    assert np.isnan(back["alpha"][0]) and back["alpha"].tolist()[1:] == [0.0, 4.0]
    assert back["layer"].tolist() == [-1, 2, -1] and back["layer"].dtype == np.int64
    assert selection_variant(back).tolist() == [ALL, "n30s1", ALL]  # the unmodified row is every variant's
    assert list(back.columns) == list(frame.columns)


def test_the_contract_refuses_what_it_cannot_round_trip(tmp_path):
    with pytest.raises(ValueError, match="needs the columns"):
        write_table(pd.DataFrame({"selector": ["mad"]}), tmp_path / "c.csv", "counts_per_layer")
    holes = pd.DataFrame({"selector": ["mad"], "emotion": ["sad"], "layer": [np.nan], "count": [3]})
    with pytest.raises(ValueError, match="integer column 'layer'"):
        write_table(holes, tmp_path / "c.csv", "counts_per_layer")
    with pytest.raises(KeyError):
        write_table(holes, tmp_path / "c.csv", "no_such_kind")


#: Direct reads and writes of a table still allowed: the contract itself, the corpus preparation (manifest and
#: quarantine list, an input of the stages, not a stage's table), and the browser's read of that manifest.
_DIRECT_IO = re.compile(r"\b(?:pd\.read_csv|pd\.read_parquet|\.to_csv|\.to_parquet)\(")
_ALLOWED_FILES = ("esn/tables.py", "esn/prepare.py", "esn/corpora/")


def _allowed(rel: str, line: str) -> bool:
    return rel.startswith(_ALLOWED_FILES) or (rel == "esn/browser.py" and "manifest.parquet" in line)


def test_every_stage_reads_and_writes_tables_through_the_contract():
    consumers = [*sorted((ROOT / "workflow" / "scripts").glob("*.py")), *sorted((ROOT / "esn").rglob("*.py"))]
    direct = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in consumers
              for number, line in enumerate(path.read_text().splitlines(), 1)
              if _DIRECT_IO.search(line) and not _allowed(path.relative_to(ROOT).as_posix(), line)]
    assert not direct, "tables read or written around esn.tables:\n" + "\n".join(direct)
    readers = ("workflow/scripts/metrics.py", "workflow/scripts/knockout_table.py",
               "workflow/scripts/transfer_table.py", "workflow/scripts/neuron_tables.py", "workflow/scripts/intervene.py", "esn/population.py",
               "esn/browser.py", "esn/figures/registry.py")
    assert [rel for rel in readers if "from esn.tables import" not in (ROOT / rel).read_text()] == []
