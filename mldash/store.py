"""Moved to ``mldash._runfolder``; kept only while callers move over."""

from ._runfolder import (  # noqa: F401
    experiment_summary,
    find_experiments,
    headline,
    latest_metrics,
    load_meta,
    metric_names,
    read_log_records,
    read_series,
    resolve,
)
