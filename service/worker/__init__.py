"""Celery app and the scoring pipeline's tasks."""
