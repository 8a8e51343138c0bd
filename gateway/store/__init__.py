"""The gateway's durable state: the only place with SQL (schema, migrations, queries), the
Provider's erasure-coded shares and their pack files. Imports wire only.
"""
