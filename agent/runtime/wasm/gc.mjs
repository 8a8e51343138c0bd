// A gc.collect() that collects, for device code that runs for ever inside one call from JS.
//
// This build (MICROPY_GC_SPLIT_HEAP_AUTO, ports/webassembly/main.c) cannot see pointers held
// in wasm locals, so its gc_collect() only sets a flag; the collection runs when the call
// depth from JS (the static `external_call_depth`) drops back to 0. A device's main loop
// never returns, so without help its garbage is never reclaimed and a capped heap fills up.
//
// collect() makes gc.collect() real: it sets that counter to 0 for the length of one call
// into the built-in gc.collect (depth 0 -> 1 -> 0), so the pending collection runs there,
// then restores the counter. The roots are the VM state and the Python stack (this build
// uses MICROPY_ENABLE_PYSTACK, so every Python frame is scanned); only objects held solely
// by C code on the way to the call would be missed. Calling gc.collect() from Python code
// is such a point, except from inside a C helper that calls back into Python with objects
// only it holds (a class's __init__ with arguments, a sort key, a __str__ used by print).
//
// The counter's address is found once at start-up: the only word of the wasm memory that
// reads 0, 1, 2, 3 at call depths 0, 1, 2, 3.

// Resolves to collect(), or throws if the counter cannot be found unambiguously.
export function gcCollector(mp, memory) {
  const words = () => new Uint32Array(memory.buffer);
  const snapshots = [words().slice()];
  mp.registerJsModule("_ekprobe", {
    at(depth) {
      snapshots.push(words().slice());
      if (depth < 3) mp.runPython(`_ekprobe.at(${depth + 1})`);
    },
  });
  mp.runPython("import _ekprobe\n_ekprobe.at(1)");
  mp.runPython("import sys\ndel sys.modules['_ekprobe']");
  const candidates = [];
  for (let i = 0; i < snapshots[0].length; i++) {
    if (snapshots.every((s, depth) => s[i] === depth)) candidates.push(i);
  }
  if (candidates.length !== 1) {
    throw new Error(`gc.mjs: found ${candidates.length} candidates for the call-depth counter`);
  }
  const counter = candidates[0];
  const builtinCollect = mp.pyimport("gc").collect;
  return function collect() {
    const w = words();
    const depth = w[counter];
    w[counter] = 0;
    try {
      builtinCollect();
    } finally {
      w[counter] = depth;
    }
  };
}
