"""What the gateway tells other systems: Home Assistant discovery and state, Prometheus
metrics. Imports store and mqtt.
"""
