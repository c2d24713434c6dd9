"""Celery tasks of the alerting side (registered by name on the shared Celery app).

Names: collapsewatch.evaluate_alerts(model_id), collapsewatch.check_liveness(),
collapsewatch.deliver_notification(notification_id), collapsewatch.sweep_outbox().
"""
