"""The owner's side: the keyring file that holds the device data keys, and decryption and
export of stored messages with it. Imports wire only.
"""
