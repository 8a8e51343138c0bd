// Reads the virtual device's serial line (the pty master) for repl_host.mjs. While code runs
// (control[0] = 1), Ctrl-C is not passed on but raised as an interrupt (control[1] = 1), as a
// board's UART interrupt handler does.
import fs from "node:fs";
import { parentPort, workerData } from "node:worker_threads";

const { fd, control } = workerData;
const buffer = Buffer.alloc(4096);
const nap = new Int32Array(new SharedArrayBuffer(4));

for (;;) {
  let n;
  try {
    n = fs.readSync(fd, buffer, 0, buffer.length, null);
  } catch (error) {
    if (error.code !== "EAGAIN") throw error;
    Atomics.wait(nap, 0, 0, 5); // the master is non-blocking so that writes never hang
    continue;
  }
  const bytes = [];
  for (const c of buffer.subarray(0, n)) {
    if (c === 3 && Atomics.load(control, 0)) {
      Atomics.store(control, 1, 1);
      Atomics.notify(control, 1);
    } else bytes.push(c);
  }
  if (bytes.length) parentPort.postMessage(Uint8Array.from(bytes));
}
