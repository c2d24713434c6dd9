"""collapsewatch service: API, storage, workers, alerting, exporter and CLI."""

__version__ = "0.1.0"
