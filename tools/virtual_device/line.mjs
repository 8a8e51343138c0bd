// The serial line's receive state, shared by repl_host.mjs and input_worker.mjs: an Int32Array
// of these slots over a SharedArrayBuffer, and a byte ring of RING_SIZE. HEAD and TAIL count
// bytes ever written and read (the ring index is the count modulo its size).
export const BUSY = 0; // 1 while device code runs
export const INTERRUPT = 1; // 1 when an interrupt character arrived while busy
export const HEAD = 2;
export const TAIL = 3;
export const KBD_CHAR = 4; // micropython.kbd_intr()'s character, -1 if disabled
export const SLOTS = 5;
export const RING_SIZE = 1 << 16;

export function sharedLine() {
  const line = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  line[KBD_CHAR] = 3;
  return { line, ring: new Uint8Array(new SharedArrayBuffer(RING_SIZE)) };
}

// Takes up to n received bytes off the ring into target (a Uint8Array); returns how many.
export function take(line, ring, target, n) {
  const tail = Atomics.load(line, TAIL);
  const count = Math.min(n, Atomics.load(line, HEAD) - tail);
  for (let i = 0; i < count; i++) target[i] = ring[(tail + i) % ring.length];
  Atomics.store(line, TAIL, tail + count);
  Atomics.notify(line, TAIL);
  return count;
}

// Waits up to ms for a received byte; returns whether one is there.
export function waitForInput(line, ms) {
  const tail = Atomics.load(line, TAIL);
  if (Atomics.load(line, HEAD) !== tail) return true;
  if (ms > 0) Atomics.wait(line, HEAD, tail, ms);
  return Atomics.load(line, HEAD) !== tail;
}
