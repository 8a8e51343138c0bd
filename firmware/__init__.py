"""EdgeKeep firmware: agent bundles (bundle.py), boards (boards.py), release signing
(signing.py), pinned MicroPython images (images.py, images.json), and manifest.py for
freezing the agent into a custom MicroPython build. CLI: python -m firmware."""
