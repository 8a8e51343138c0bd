"""The path from MQTT to the store: verify, sequence, commit, ack; camera objects and their
events; the OTA sender. Imports wire, store, anchor and mqtt; nothing above it.
"""
