"""Device runtimes: the CPython-side launcher for MicroPython (micropython.py) and the
WebAssembly host it starts (wasm/)."""
