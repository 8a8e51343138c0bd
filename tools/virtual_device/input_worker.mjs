// The virtual device's UART receive side, for repl_host.mjs: reads the serial line (the pty
// master) into a ring buffer shared with the interpreter's thread, as a board's UART
// interrupt handler fills its stdin buffer. It runs whatever the interpreter is doing, so:
// - while code runs (line[BUSY] = 1), the interrupt character (line[KBD_CHAR], 3 unless
//   micropython.kbd_intr() changed it) is not buffered but raised (line[INTERRUPT] = 1);
// - code that reads stdin (mpremote's `mount` does) waits on line[HEAD] and takes bytes
//   straight from the ring;
// - when the interpreter is idle, a message wakes its event loop to feed the REPL.
// A full ring stops reading: the pty then holds back the sender, like flow control.
import fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { BUSY, HEAD, INTERRUPT, KBD_CHAR, TAIL } from "./line.mjs";

const { fd, line, ring } = workerData;
const buffer = Buffer.alloc(4096);
const nap = new Int32Array(new SharedArrayBuffer(4));

function waitForRoom() {
  for (;;) {
    const tail = Atomics.load(line, TAIL);
    if (Atomics.load(line, HEAD) - tail < ring.length) return;
    Atomics.wait(line, TAIL, tail, 50);
  }
}

function receive(bytes) {
  let head = Atomics.load(line, HEAD);
  for (const c of bytes) {
    if (c === Atomics.load(line, KBD_CHAR) && Atomics.load(line, BUSY)) {
      Atomics.store(line, INTERRUPT, 1);
      Atomics.notify(line, INTERRUPT);
      continue;
    }
    if (head - Atomics.load(line, TAIL) >= ring.length) {
      Atomics.store(line, HEAD, head);
      Atomics.notify(line, HEAD);
      waitForRoom();
    }
    ring[head % ring.length] = c;
    head++;
  }
  Atomics.store(line, HEAD, head);
  Atomics.notify(line, HEAD);
  parentPort.postMessage(0);
}

for (;;) {
  let n;
  try {
    n = fs.readSync(fd, buffer, 0, buffer.length, null);
  } catch (error) {
    if (error.code !== "EAGAIN") throw error;
    Atomics.wait(nap, 0, 0, 5); // the master is non-blocking so that writes never hang
    continue;
  }
  receive(buffer.subarray(0, n));
}
