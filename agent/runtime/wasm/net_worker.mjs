// The network side of net.mjs: owns the TCP sockets and does their asynchronous I/O.
// Each request from the blocked main thread gets exactly one reply: a result in ctl[1]
// (a count, a socket id, or -errno), payload bytes in data, then ctl[0] = 1 and a notify.
// Received bytes queue here (as in a kernel's receive buffer) until the device reads them.
import dns from "node:dns";
import net from "node:net";
import os from "node:os";
import { parentPort, workerData } from "node:worker_threads";

const { ctl, data } = workerData;
const { EAGAIN, EBADF, EIO, ETIMEDOUT } = os.constants.errno;
const EAI_FAIL = 202; // what lwIP's getaddrinfo reports, as on an ESP32
const HIGH_WATER = 256 * 1024; // stop reading from the peer above this many queued bytes
const sockets = new Map();
let nextId = 1;

function reply(result, payload) {
  if (payload) data.set(payload);
  ctl[1] = result;
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
}

const errnoOf = (error) => -(os.constants.errno[error.code] || EIO);

function resolve({ host }) {
  dns.lookup(host, { family: 4 }, (error, address) => {
    if (error) reply(-EAI_FAIL);
    else {
      const bytes = Buffer.from(address);
      reply(bytes.length, bytes);
    }
  });
}

function connect({ host, port, timeout }) {
  const sock = net.connect({ host, port });
  let timer;
  const settle = (result) => {
    clearTimeout(timer);
    sock.removeAllListeners();
    if (result < 0) sock.on("error", () => {}).destroy();
    else {
      sock.setNoDelay(true);
      sockets.set(result, track(sock));
    }
    reply(result);
  };
  // A non-blocking socket (timeout 0) connects as a blocking one would.
  if (timeout > 0) timer = setTimeout(() => settle(-ETIMEDOUT), timeout);
  sock.once("error", (error) => settle(errnoOf(error)));
  sock.once("connect", () => settle(nextId++));
}

// The receive state of a connected socket: queued chunks, end of stream, sticky error, and
// the pending recv if the device is blocked waiting.
function track(sock) {
  const state = { sock, chunks: [], queued: 0, eof: false, error: 0, waiter: null };
  sock.on("data", (chunk) => {
    state.chunks.push(chunk);
    state.queued += chunk.length;
    if (state.queued > HIGH_WATER) sock.pause();
    wake(state);
  });
  sock.on("end", () => {
    state.eof = true;
    wake(state);
  });
  sock.on("error", (error) => {
    state.error = errnoOf(error);
    wake(state);
  });
  sock.on("close", () => {
    state.eof = true;
    wake(state);
  });
  return state;
}

function wake(state) {
  const waiter = state.waiter;
  if (waiter && (state.queued || state.error || state.eof)) {
    state.waiter = null;
    clearTimeout(waiter.timer);
    deliver(state, waiter.n);
  }
}

function deliver(state, n) {
  if (!state.queued) return reply(state.error || 0);
  let got = 0;
  while (got < n && state.chunks.length) {
    const chunk = state.chunks[0];
    const take = Math.min(n - got, chunk.length);
    data.set(chunk.subarray(0, take), got);
    got += take;
    if (take === chunk.length) state.chunks.shift();
    else state.chunks[0] = chunk.subarray(take);
  }
  state.queued -= got;
  if (state.queued <= HIGH_WATER) state.sock.resume();
  reply(got);
}

function recv({ id, n, timeout }) {
  const state = sockets.get(id);
  if (!state) return reply(-EBADF);
  if (state.queued || state.error || state.eof) return deliver(state, Math.min(n, data.length));
  if (timeout === 0) return reply(-EAGAIN);
  const timer = timeout > 0 && setTimeout(() => {
    state.waiter = null;
    reply(-ETIMEDOUT);
  }, timeout);
  state.waiter = { n: Math.min(n, data.length), timer };
}

// Accepts the bytes into the socket's send buffer, waiting (up to the timeout) while more
// than HIGH_WATER bytes are already waiting to go out.
function send({ id, bytes, timeout }) {
  const state = sockets.get(id);
  if (!state) return reply(-EBADF);
  if (state.error) return reply(state.error);
  const { sock } = state;
  if (sock.writableLength <= HIGH_WATER) {
    sock.write(bytes);
    return reply(bytes.length);
  }
  if (timeout === 0) return reply(-EAGAIN);
  const timer = timeout > 0 && setTimeout(() => {
    sock.off("drain", drained);
    reply(-ETIMEDOUT);
  }, timeout);
  const drained = () => {
    clearTimeout(timer);
    send({ id, bytes, timeout: -1 });
  };
  sock.once("drain", drained);
}

function close({ id }) {
  const state = sockets.get(id);
  if (!state) return reply(-EBADF);
  sockets.delete(id);
  state.sock.destroySoon(); // FIN once queued bytes are out
  reply(0);
}

const handlers = { resolve, connect, recv, send, close };
parentPort.on("message", (request) => {
  try {
    handlers[request.op](request);
  } catch (error) {
    reply(-EIO);
  }
});
parentPort.postMessage("ready");
