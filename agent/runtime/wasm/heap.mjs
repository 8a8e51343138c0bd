// Loads the MicroPython WebAssembly build with its GC heap capped at a device-sized limit.
//
// The build grows its GC heap on demand (split heap, up to 128 MiB more) by malloc()ing from
// the wasm memory, so the heapsize option alone caps nothing. We refuse every wasm memory
// growth after start-up and fill the C heap with a balloon, keeping a small slack for the C
// side (exception texts, strings crossing from JS). The GC then cannot add a heap area (it
// asks for at least its current size) and raises MemoryError at the configured size.
//
// The balloon is allocated through the exported malloc/free; the growth hook is put in place
// by wrapping WebAssembly.instantiate during loading, the only point where the build's
// imports are reachable.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

export const C_SLACK = 16 * 1024;
export const MIN_HEAP = 2 * C_SLACK;
const BALLOON_CHUNKS = [1 << 20, 1 << 16, 1 << 12, 1 << 8];

// Resolves to {mp, memory}: the MicroPython instance and its (now fixed) wasm memory.
export async function loadCapped(heapsize, options) {
  if (!(heapsize >= MIN_HEAP)) throw new Error(`heap must be at least ${MIN_HEAP} bytes`);
  let frozen = false;
  let memory;
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = async (binary, imports) => {
    const grow = imports.env.emscripten_resize_heap;
    imports.env.emscripten_resize_heap = (size) => (frozen ? 0 : grow(size));
    const result = await instantiate(binary, imports);
    memory = result.instance.exports.memory;
    return result;
  };
  let mp;
  try {
    mp = await loadMicroPython({ ...options, heapsize });
  } finally {
    WebAssembly.instantiate = instantiate;
  }
  frozen = true;
  inflateBalloon(mp._module);
  return { mp, memory };
}

function inflateBalloon(module) {
  const slack = module._malloc(C_SLACK);
  for (const size of BALLOON_CHUNKS) while (module._malloc(size));
  module._free(slack);
}
