"""`arena-serve export-parquet`: the outcome log as Parquet files, one per table, for a warehouse.

Each table of the store (either kind) is read in chunks and written with pyarrow as it is read,
so a log of any size goes out in bounded memory; each column keeps its declared type (text,
64-bit integer, double), whatever a chunk holds. People are not exported as they are: the ids
of units, voters, users, sessions and API keys are replaced by their HMAC under the store's own
secret (`router.preferences.voter_hash`, the same as the preference export's, so the files join
with each other and with it, and trace back to no one), unless `raw_ids`. The text of
completions (`transcripts`) goes only with `with_text`; the store's secret and the /metrics
totals never.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from router.preferences import voter_hash
from router.store import TABLES, OutcomeStore, column_types

PEOPLE = frozenset({"unit", "voter", "user", "session", "principal"})
ARROW = {"TEXT": pa.string(), "INTEGER": pa.int64(), "REAL": pa.float64()}
SKIPPED = frozenset({"counters"})


def export_parquet(
    location: str | Path,
    folder: Path,
    *,
    raw_ids: bool = False,
    with_text: bool = False,
    chunk: int = 100_000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write `folder/TABLE.parquet` for each table; rows per table."""
    folder.mkdir(parents=True, exist_ok=True)
    store = OutcomeStore(location)
    try:
        secret = store.voter_secret()
        declared = column_types()
        written: dict[str, int] = {}
        for table in TABLES:
            if table in SKIPPED or (table == "transcripts" and not with_text):
                continue
            written[table] = _table(
                store, table, declared[table], folder, chunk, progress, None if raw_ids else secret
            )
        return written
    finally:
        store.close()


def _table(
    store: OutcomeStore,
    table: str,
    declared: dict[str, str],
    folder: Path,
    chunk: int,
    progress: Callable[[str, int], None] | None,
    secret: bytes | None,
) -> int:
    cursor = store.cursor(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    schema = pa.schema([(name, ARROW[declared[name]]) for name in names])
    hashed = [i for i, name in enumerate(names) if secret is not None and name in PEOPLE]
    rows = 0
    partial = folder / f"{table}.parquet.partial"
    with pq.ParquetWriter(partial, schema) as writer:
        while batch := cursor.fetchmany(chunk):
            columns = [list(column) for column in zip(*batch, strict=True)]
            for i in hashed:
                columns[i] = [None if v is None else voter_hash(secret, str(v)) for v in columns[i]]
            writer.write_table(
                pa.Table.from_arrays(
                    [
                        pa.array(c, type=schema.field(n).type)
                        for n, c in zip(names, columns, strict=True)
                    ],
                    schema=schema,
                )
            )
            rows += len(batch)
            if progress is not None:
                progress(table, rows)
    partial.rename(folder / f"{table}.parquet")
    return rows
