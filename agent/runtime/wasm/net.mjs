// Blocking TCP for MicroPython, which runs synchronously on Node's main thread: each call
// posts a request to net_worker.mjs and sleeps in Atomics.wait until the worker answers.
// Buffers are addresses in the wasm memory (uctypes.addressof on the Python side), so
// bytes are copied once and nothing is allocated on the device's heap here.
import { once } from "node:events";
import { Worker } from "node:worker_threads";

const CHUNK = 64 * 1024; // the most one recv() returns

// Resolves to the functions for the _ekhost module; timeouts are in ms, -1 = forever.
export async function startNet(memory) {
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const data = new Uint8Array(new SharedArrayBuffer(CHUNK));
  const worker = new Worker(new URL("./net_worker.mjs", import.meta.url), { workerData: { ctl, data } });
  await once(worker, "message");
  worker.unref();

  const call = (request, transfer) => {
    Atomics.store(ctl, 0, 0);
    worker.postMessage(request, transfer);
    Atomics.wait(ctl, 0, 0);
    return ctl[1];
  };
  const view = (addr, n) => new Uint8Array(memory.buffer, addr, n);

  return {
    // The IPv4 address of host as a string, or -202 if it does not resolve.
    resolve(host) {
      const n = call({ op: "resolve", host });
      return n < 0 ? n : Buffer.from(data.subarray(0, n)).toString();
    },
    sock_connect: (host, port, timeout) => call({ op: "connect", host, port, timeout }),
    sock_send(id, addr, n, timeout) {
      const bytes = view(addr, n).slice();
      return call({ op: "send", id, bytes, timeout }, [bytes.buffer]);
    },
    sock_recv(id, addr, n, timeout) {
      const got = call({ op: "recv", id, n, timeout });
      if (got > 0) view(addr, got).set(data.subarray(0, got));
      return got;
    },
    sock_close: (id) => call({ op: "close", id }),
  };
}
