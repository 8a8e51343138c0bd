"""The `edgekeep` command: one module per command group, shared helpers in common.py.
The top of the graph: may import any gateway package.
"""
