// A MicroPython board on a serial line: the official WebAssembly build behind a pty, speaking
// the REPL protocols that mpremote and tools/flash.py use.
//
//   node repl_host.mjs --fd FD --dir DEVICE_DIR [--heap BYTES] [--flash BYTES]
//                      [--machine TEXT] [--start hard|soft|raw]
//
// FD is the pty's master end (the launcher, tools/virtual_device/__init__.py, owns the pty).
// DEVICE_DIR is the board's flash, at / as on an ESP32 (write-through to the host dir:
// agent/runtime/wasm/flash.mjs), limited to --flash bytes in 4 KiB blocks. The build's own
// /tmp, /home and /dev are removed; /proc cannot be (a mount) and shows in listings. The
// runtime modules (agent/runtime/wasm/lib and lib/ here) are imported at boot, as frozen
// modules would be, and are not on the flash. --start says how the board came up: "hard" (power-on or
// machine.reset(): runs main.py), "soft" (Ctrl-D at the friendly REPL: prints "MPY: soft
// reboot", runs main.py) or "raw" (Ctrl-D in the raw REPL: no main.py, back in the raw REPL).
//
// The friendly REPL is MicroPython's own (pyexec, event driven). The raw REPL and raw-paste
// mode are implemented here with the bytes of py/pyexec.c, because the event-driven pyexec
// has no raw-paste. A reset ends this process with an EXIT_* status; the launcher starts
// the next one on the same pty, so every reset really starts from a fresh interpreter.
//
// As on a board, the line is read whatever the interpreter does (input_worker.mjs, the
// UART's interrupt handler): Ctrl-C interrupts running code, main.py included, and what
// follows it waits in the receive buffer for the REPL. The interrupt is raised at the code's
// next call out of the interpreter: a sleep, a socket call, a print, time.ticks_ms() (a loop
// that calls none of these cannot be interrupted: this build has no VM hook). Text output
// gets CRLF line endings (a board's cooked stdout); sys.stdout.buffer stays raw and
// sys.stdin reads the line (lib/_vstdio.py), as mpremote's `mount` needs. The heap is
// collected after each exec, as a board's allocator would before running out.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { copyIn, mirror } from "../../agent/runtime/wasm/flash.mjs";
import { gcCollector } from "../../agent/runtime/wasm/gc.mjs";
import { loadCapped } from "../../agent/runtime/wasm/heap.mjs";
import { startNet } from "../../agent/runtime/wasm/net.mjs";
import { BUSY, INTERRUPT, KBD_CHAR, sharedLine, take, waitForInput } from "./line.mjs";

const EXIT_HOST = 70;
const EXIT_RESET = 100; // machine.reset(), as agent/runtime/wasm/lib/machine.py
const EXIT_SOFT = 101;
const EXIT_SOFT_RAW = 102;
const RUNTIME = "/runtime";
const SPECIAL = new Set([".", "..", "proc"]);
const BLOCK = 4096;
const PASTE_WINDOW = 128; // MICROPY_REPL_STDIN_BUFFER_MAX / 2
const HERE = path.dirname(fileURLToPath(import.meta.url));
const WASM_LIB = path.join(HERE, "..", "..", "agent", "runtime", "wasm", "lib");
const CTRL = { A: 1, B: 2, C: 3, D: 4, E: 5 };
const RAW_BANNER = "raw REPL; CTRL-B to exit\r\n";

const opts = parseArgs({
  options: {
    fd: { type: "string" },
    dir: { type: "string" },
    heap: { type: "string", default: "131072" },
    flash: { type: "string", default: String(1536 * 1024) },
    machine: { type: "string", default: "EdgeKeep virtual device" },
    start: { type: "string", default: "hard" },
  },
}).values;
const port = Number(opts.fd);

// -- the serial line --------------------------------------------------------------------
// Output is buffered and written at each flush. With nobody reading the pty its buffer fills:
// like a UART without a listener, what cannot be written within a moment is dropped.
let pending = [];
let stalled = false;
const nap = new Int32Array(new SharedArrayBuffer(4));

function send(text) {
  for (const c of Buffer.from(text, "latin1")) pending.push(c);
}

// What device code prints: a bare LF goes out as CRLF.
function deviceOutput(bytes) {
  for (const c of bytes) {
    if (c === 10 && pending[pending.length - 1] !== 13) pending.push(13);
    pending.push(c);
  }
  pollInterrupt();
}

function flush() {
  const buffer = Buffer.from(pending);
  pending = [];
  let done = 0;
  const giveUp = Date.now() + (stalled ? 0 : 200);
  while (done < buffer.length) {
    try {
      done += fs.writeSync(port, buffer, done);
      stalled = false;
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
      if (Date.now() >= giveUp) {
        stalled = true;
        return;
      }
      Atomics.wait(nap, 0, 0, 5);
    }
  }
}

function exit(code) {
  flush();
  process.exit(code);
}

function hostFailure(error) {
  fs.writeSync(2, `repl_host.mjs: ${error.stack || error}\n`);
  exit(EXIT_HOST);
}

// -- input: a worker reads the pty; Ctrl-C while code runs becomes an interrupt ----------
const { line, ring } = sharedLine();
let raiseInterrupt = () => {}; // set once the interpreter is loaded
let interruptChar = () => 3;

function pollInterrupt() {
  if (Atomics.load(line, INTERRUPT) && Atomics.exchange(line, INTERRUPT, 0)) raiseInterrupt();
}

function syncInterruptChar() {
  Atomics.store(line, KBD_CHAR, interruptChar());
}

// onInput() runs whenever the event loop is free and bytes may be waiting in the ring.
function startInput(onInput) {
  const worker = new Worker(new URL("./input_worker.mjs", import.meta.url), {
    workerData: { fd: port, line, ring },
  });
  worker.on("message", onInput);
  worker.on("error", hostFailure);
}

// The build's clock calls are the only calls out of the interpreter that some busy loops
// make: they too raise a pending interrupt.
function interruptAtClockCalls() {
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = (binary, imports) => {
    for (const name of ["mp_js_ticks_ms", "mp_js_time_ms"]) {
      const clock = imports.env[name];
      if (clock) imports.env[name] = (...args) => (pollInterrupt(), clock(...args));
    }
    return instantiate(binary, imports);
  };
  return () => {
    WebAssembly.instantiate = instantiate;
  };
}

// -- the interpreter --------------------------------------------------------------------
const SKIPPED_DIRS = new Set(["__pycache__", "node_modules"]);
const isCode = (name, isDir) =>
  isDir ? !name.startsWith(".") && !SKIPPED_DIRS.has(name) : /\.m?py$/.test(name);

function flashUsage(FS) {
  let blocks = 0;
  const walk = (dir) => {
    for (const name of FS.readdir(dir || "/")) {
      if (SPECIAL.has(name)) continue;
      const p = `${dir}/${name}`;
      const stat = FS.stat(p);
      blocks += FS.isDir(stat.mode) ? 1 : Math.max(1, Math.ceil(stat.size / BLOCK));
      if (FS.isDir(stat.mode)) walk(p);
    }
  };
  walk("");
  return blocks;
}

// Refuses (ENOSPC) a write that would take the flash past its size.
function limitFlash(FS, totalBlocks) {
  const write = FS.write.bind(FS);
  FS.write = (stream, buffer, offset, length, position, canOwn) => {
    if (length > 0) {
      const at = position ?? stream.position;
      const size = stream.node.usedBytes;
      const grow = Math.ceil(Math.max(size, at + length) / BLOCK) - Math.ceil(size / BLOCK);
      if (grow > 0 && flashUsage(FS) + grow > totalBlocks) throw new FS.ErrnoError(28) // ENOSPC as a board numbers it (see lib/_vdevice.py);
    }
    return write(stream, buffer, offset, length, position, canOwn);
  };
}

function removeTree(FS, p) {
  if (FS.isDir(FS.lstat(p).mode)) {
    for (const name of FS.readdir(p)) if (name !== "." && name !== "..") removeTree(FS, `${p}/${name}`);
    FS.rmdir(p);
  } else FS.unlink(p);
}

async function boot() {
  const deviceDir = fs.realpathSync(opts.dir);
  const totalBlocks = Math.floor(Number(opts.flash) / BLOCK);
  const restore = interruptAtClockCalls();
  let loaded;
  try {
    loaded = await loadCapped(Number(opts.heap), {
      linebuffer: false,
      stdout: deviceOutput,
      stderr: deviceOutput,
    });
  } finally {
    restore();
  }
  const { mp, memory } = loaded;
  raiseInterrupt = () => mp._module._mp_sched_keyboard_interrupt();
  interruptChar = () => mp._module._mp_hal_get_interrupt_char();
  const FS = mp.FS;
  for (const name of FS.readdir("/")) if (!SPECIAL.has(name)) removeTree(FS, `/${name}`);
  copyIn(FS, WASM_LIB, RUNTIME, isCode);
  copyIn(FS, path.join(HERE, "lib"), RUNTIME, isCode);

  // Called whenever device code waits: output goes out, and a pending Ctrl-C is raised.
  const checkpoint = () => {
    flush();
    syncInterruptChar();
    pollInterrupt();
  };
  const net = await startNet(memory);
  for (const [name, fn] of Object.entries(net)) {
    net[name] = (...args) => {
      const result = fn(...args);
      checkpoint();
      return result;
    };
  }
  const collect = gcCollector(mp, memory);
  const bytesAt = (addr, n) => new Uint8Array(memory.buffer, addr, n);
  mp.registerJsModule("_ekhost", {
    collect,
    ...net,
    sleep_ms(ms) {
      flush();
      syncInterruptChar();
      Atomics.wait(line, INTERRUPT, 0, Math.max(0, ms || 0));
      checkpoint();
    },
    stdin_ready(ms) {
      checkpoint();
      return waitForInput(line, ms);
    },
    // Blocks until n bytes are in (or an interrupt comes: then returns what it has).
    stdin_read(addr, n) {
      let got = 0;
      while (got < n) {
        checkpoint();
        if (Atomics.load(line, INTERRUPT)) break;
        if (waitForInput(line, 50)) got += take(line, ring, bytesAt(addr + got, n - got), n - got);
      }
      pollInterrupt();
      return got;
    },
    stdout_raw(addr, n) {
      for (const c of bytesAt(addr, n)) pending.push(c);
    },
    urandom(addr, n) {
      crypto.randomFillSync(new Uint8Array(memory.buffer, addr, n));
    },
    device_path: () => deviceDir,
    flash_blocks: () => [BLOCK, totalBlocks, totalBlocks - flashUsage(FS)],
    machine: opts.machine,
    exit,
    EXIT_RESET,
  });
  const modules = FS.readdir(RUNTIME).filter((n) => n.endsWith(".py")).map((n) => n.slice(0, -3));
  mp.runPython(
    `import sys\nsys.path[:] = ${JSON.stringify([RUNTIME, ".frozen"])}\n` +
      `import ${modules.join(", ")}\nsys.path[:] = ["", ".frozen", "/lib"]`,
  );
  removeTree(FS, RUNTIME);
  copyIn(FS, deviceDir, "/");
  FS.chdir("/");
  mirror(FS, "", deviceDir, hostFailure);
  limitFlash(FS, totalBlocks);
  return { mp, FS, collect };
}

// Runs code as pyexec's parse_compile_execute does; returns the traceback text ("" if none)
// and whether it was SystemExit (which asks for a soft reset).
// Ctrl-C interrupts it, as pyexec sets on a board, and the heap is collected after it.
function execute(device, code) {
  const { mp, collect } = device;
  if (interruptChar() !== 3) mp.runPython("import micropython\nmicropython.kbd_intr(3)");
  syncInterruptChar();
  Atomics.store(line, INTERRUPT, 0);
  Atomics.store(line, BUSY, 1);
  try {
    mp.runPython(code);
    return { error: "", systemExit: false };
  } catch (error) {
    if (error.name !== "PythonError") throw error;
    return { error: error.message, systemExit: error.type === "SystemExit" };
  } finally {
    Atomics.store(line, BUSY, 0);
    Atomics.store(line, INTERRUPT, 0);
    collect();
  }
}

function runMain(device) {
  if (!device.FS.analyzePath("/main.py").exists) return;
  const { error, systemExit } = execute(device, "exec(open('main.py').read(), {'__name__': '__main__'})");
  if (error && !systemExit) send(error.replace(/\n/g, "\r\n"));
}

// -- the REPLs --------------------------------------------------------------------------
class Repl {
  constructor(device) {
    this.device = device;
    this.mp = device.mp;
    this.mode = "friendly";
    this.friendlyStarted = false;
    this.line = [];
    this.paste = null; // raw-paste state: {code: [], remain}
  }

  friendly() {
    this.mode = "friendly";
    if (this.friendlyStarted) {
      this.feedFriendly(CTRL.B); // pyexec prints the banner and a fresh prompt
    } else {
      this.friendlyStarted = true;
      this.mp.replInit();
    }
  }

  raw() {
    this.mode = "raw";
    this.line = [];
    send(RAW_BANNER + ">");
  }

  feed(c) {
    if (this.paste) this.feedPaste(c);
    else if (this.mode === "raw") this.feedRaw(c);
    else if (c === CTRL.A) {
      send("\r\n");
      this.raw();
    } else this.feedFriendly(c);
  }

  feedFriendly(c) {
    Atomics.store(line, KBD_CHAR, 3); // pyexec sets it for the line it runs
    Atomics.store(line, BUSY, 1);
    const ret = this.mp.replProcessChar(c);
    Atomics.store(line, BUSY, 0);
    Atomics.store(line, INTERRUPT, 0);
    if (ret) exit(EXIT_SOFT); // PYEXEC_FORCED_EXIT: Ctrl-D or SystemExit
    if (c === 13) this.device.collect(); // a line ran
  }

  feedRaw(c) {
    const line = this.line;
    if (c === CTRL.A) {
      if (line.length === 2 && line[0] === CTRL.E) return this.startPaste(line[1]);
      this.raw();
    } else if (c === CTRL.B) {
      send("\r\n");
      this.friendly();
    } else if (c === CTRL.C) {
      this.line = [];
    } else if (c === CTRL.D) {
      send("OK");
      if (!line.length) {
        send("\r\n");
        exit(EXIT_SOFT_RAW);
      }
      this.run(Buffer.from(line).toString("utf8"));
    } else {
      line.push(c);
    }
  }

  startPaste(command) {
    this.line = [];
    if (command !== "A".charCodeAt(0)) {
      send("R\x00>");
      return;
    }
    send("R\x01" + String.fromCharCode(PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8) + "\x01");
    this.paste = { code: [], remain: PASTE_WINDOW };
  }

  feedPaste(c) {
    const paste = this.paste;
    if (c === CTRL.C || c === CTRL.D) {
      this.paste = null;
      send("\x04"); // end of data acknowledged
      if (c === CTRL.C) {
        send("\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>");
        return;
      }
      this.run(Buffer.from(paste.code).toString("utf8"));
      return;
    }
    paste.code.push(c);
    if (--paste.remain === 0) {
      send("\x01");
      paste.remain = PASTE_WINDOW;
    }
  }

  run(code) {
    const { error, systemExit } = execute(this.device, code);
    send("\x04" + (systemExit ? "" : error.replace(/\n/g, "\r\n")) + "\x04");
    if (systemExit) exit(EXIT_SOFT_RAW);
    this.line = [];
    send(">");
  }
}

async function main() {
  const device = await boot();
  const repl = new Repl(device);
  const byte = new Uint8Array(1);
  // One byte at a time: code a byte starts may read the bytes after it itself.
  startInput(() => {
    while (take(line, ring, byte, 1)) repl.feed(byte[0]);
    flush();
  });
  if (opts.start !== "hard") send("MPY: soft reboot\r\n");
  if (opts.start === "raw") repl.raw();
  else {
    runMain(device);
    repl.friendly();
  }
  flush();
}

main().catch(hostFailure);
