"""The gateway's admin web app: pages, REST API, live updates and /metrics (docs/web.md)."""
