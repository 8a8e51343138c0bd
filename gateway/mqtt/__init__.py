"""The broker the gateway runs (Mosquitto: config, accounts, ACLs) and the paho client
settings every gateway process shares. Imports nothing else of gateway/ but localhost.
"""
