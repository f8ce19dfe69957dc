"""The server's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Metric points are "hot" while their series holds at most ``chunks.CHUNK_POINTS``
of them beyond the cold part: one ``metric_batches`` row per ingested batch
(the batch's JSON lines in one blob), so ingest costs O(1) rows per batch.
Older points live in immutable chunk objects and ``series.cold_count`` says how
many leading points are cold. Hot batch rows of a series tile
``[cold_count, total)`` exactly: no gap, no overlap.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
# Documents are JSONB on PostgreSQL (indexable, mergeable), JSON text on SQLite.
Document = JSON().with_variant(JSONB(), "postgresql")

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(100), nullable=False),
    Column("prefix", String(1000), nullable=False),
    Column("project", String(200), nullable=False),
    Column("status", String(20)),
    Column("started_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("meta", Document, nullable=False),
    Column("params", Document, nullable=False),
    Column("summary", Document, nullable=False),
    Column("logs_count", BigInteger, nullable=False, default=0),
    Column("checkpoints_count", BigInteger, nullable=False, default=0),
    UniqueConstraint("namespace", "prefix", name="uq_experiment_prefix"),
    Index("ix_experiments_project", "namespace", "project"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False),
    Column("name", String(1000), nullable=False),
    Column("total", BigInteger, nullable=False, default=0),  # points stored, hot + cold
    Column("cold_count", BigInteger, nullable=False, default=0),  # leading points in chunks
    Column("last_line", LargeBinary),  # the newest point, for listings
    # Headline statistics for filters (``_headline``): added to older databases on open.
    Column("stats", Document),  # {"n": points folded, "lows": {field: min}, "highs": {field: max}}
    Column("headline", Document),  # {"key": field, "last": v, "min": v, "max": v}
    UniqueConstraint("experiment_id", "name", name="uq_series_name"),
)

metric_batches = Table(
    "metric_batches",
    metadata,
    Column("series_id", Integer, nullable=False),
    Column("start_idx", BigInteger, nullable=False),  # index of the first point in this row
    Column("n_points", Integer, nullable=False),
    Column("first_ts", BigInteger),  # ms since the epoch, as in data.jsonl
    Column("last_ts", BigInteger),
    # The points' JSON lines exactly as in data.jsonl, joined by b"\n" (compact
    # JSON never holds a raw newline, so splitting on it is exact).
    Column("lines", LargeBinary, nullable=False),
    # One row per (series, first index): two writers can never both store a batch there.
    PrimaryKeyConstraint("series_id", "start_idx", name="pk_metric_batches"),
)

metric_chunks = Table(
    "metric_chunks",
    metadata,
    Column("series_id", Integer, nullable=False),
    Column("chunk_no", BigInteger, nullable=False),
    Column("first_index", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("key", String(1200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("first_ts", BigInteger),
    Column("last_ts", BigInteger),
    # Two compactors can never both record chunk N of a series.
    PrimaryKeyConstraint("series_id", "chunk_no", name="pk_metric_chunks"),
)

logs = Table(
    "logs",
    metadata,
    Column("experiment_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("ts", Float, nullable=False),
    Column("level_no", Integer, nullable=False),
    Column("record", LargeBinary, nullable=False),
    PrimaryKeyConstraint("experiment_id", "idx", name="pk_logs"),
    Index("ix_logs_time", "experiment_id", "ts"),
    Index("ix_logs_level", "experiment_id", "level_no", "idx"),
    sqlite_with_rowid=False,
)

# The run's captured console (console/console.jsonl), one row a line; the
# count is the table's (no counter column, so older databases need no migration).
console = Table(
    "console",
    metadata,
    Column("experiment_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("record", LargeBinary, nullable=False),
    PrimaryKeyConstraint("experiment_id", "idx", name="pk_console"),
    sqlite_with_rowid=False,
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("experiment_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("record", LargeBinary, nullable=False),
    PrimaryKeyConstraint("experiment_id", "idx", name="pk_checkpoints"),
)

# Saved files (issue 15): the run's files/files.jsonl lines as they came (append-only,
# indexed like the logs), the state of each file they describe, and the blobs: each
# distinct content once per namespace, present only once complete and verified.
file_records = Table(
    "file_records",
    metadata,
    Column("experiment_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("record", LargeBinary, nullable=False),
    PrimaryKeyConstraint("experiment_id", "idx", name="pk_file_records"),
    sqlite_with_rowid=False,
)

files = Table(
    "files",
    metadata,
    Column("experiment_id", Integer, nullable=False),
    Column("file_id", String(64), nullable=False),
    Column("idx", BigInteger, nullable=False),  # the index of its save record
    Column("path", String(1000), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("deleted_at", String(40)),  # as the tombstone says (ISO 8601), None while live
    Column("record", LargeBinary, nullable=False),  # the save record, as sent
    PrimaryKeyConstraint("experiment_id", "file_id", name="pk_files"),
    Index("ix_files_order", "experiment_id", "idx"),
    Index("ix_files_sha256", "sha256"),  # which files hold a blob (mldash gc)
)

file_blobs = Table(
    "file_blobs",
    metadata,
    Column("namespace", String(100), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("key", String(1200), nullable=False),  # its object in the blob store
    Column("created_at", Float, nullable=False),
    # The last time a client was told the server holds it (it may send a record for it
    # next instead of the bytes): `mldash gc` leaves it for its grace period after that.
    Column("used_at", Float, nullable=True),
    PrimaryKeyConstraint("namespace", "sha256", name="pk_file_blobs"),
)

# Uploads in progress, resumable: how many bytes are durable, and the store's own
# state (an S3 multipart upload's id and parts).
file_uploads = Table(
    "file_uploads",
    metadata,
    Column("upload_id", String(64), primary_key=True),
    Column("namespace", String(100), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("state", Document, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("read", Document, nullable=False),  # namespaces, "*" for all
    Column("write", Document, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

__all__ = [
    "metadata", "experiments", "series", "metric_batches", "metric_chunks", "logs", "console", "checkpoints",
    "file_records", "files", "file_blobs", "file_uploads", "tokens", "Text",
]
