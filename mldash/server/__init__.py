"""`mldash server`: the team server (HTTP API, storage on SQLite or PostgreSQL + S3)."""
