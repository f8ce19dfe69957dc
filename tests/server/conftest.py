"""The team server: its HTTP API, auth, storage on SQLite and on PostgreSQL + S3 (moto),
crash safety, isolation between namespaces and fuzzing.

``backend`` (one store per module, embedded and PostgreSQL) and ``server`` come from
tests/_server_support.py; a module that needs a fresh store per test imports the
function-scoped ``backend`` from there instead.
"""

from __future__ import annotations

from _server_support import module_backend, module_server, moto_s3, postgres  # noqa: F401 (fixtures)
