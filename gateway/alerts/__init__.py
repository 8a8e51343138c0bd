"""Alerts (docs/operations.md, "Alerts"): rules over the store and the machine (rules.py),
run as one of the deployment's singletons (runner.py), delivered to a webhook and to Home
Assistant (delivery.py), shown on the admin page (gateway/web/alerts.py). Imports store,
health and integrations.
"""
