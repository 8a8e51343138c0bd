"""Pure wire and proof primitives: parsing, canonical CBOR, message checks, Merkle trees,
manifests. No I/O; imports nothing from gateway/ but itself, and from agent/ only the
shared wire vocabulary (agent.proto, agent.objects constants, agent.cbor).
"""
