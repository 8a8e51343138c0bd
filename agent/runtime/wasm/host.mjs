// Runs device code on the official MicroPython WebAssembly build, as on a small board:
//
//   node host.mjs --dir DEVICE_DIR [--heap BYTES] [--main MODULE] [--path DIR]... [--lib DIR]
//                 [-- ARG...]
//
// - The GC heap is capped at --heap bytes (default 65536; see heap.mjs).
// - DEVICE_DIR is the device's flash: loaded at /flash, the working directory, and written
//   through to the host on every change (flash.mjs).
// - Each --path DIR is a read-only code directory (its .py/.mpy tree; symlinks followed),
//   loaded at /pathN and put on sys.path after the flash's own '' and /flash/lib.
// - lib/ next to this file is the "firmware" (/runtime, first on sys.path): socket, time
//   with non-spinning sleeps, machine, and _boot, which runs the main module. --lib DIR
//   loads it from DIR instead (micropython.py passes it compiled with mpy-cross: on a
//   board such modules are in C or frozen, and source compiled on the device takes heap).
// - ARGs after -- become sys.argv[1:].
// stdout and stderr are written line by line as the device prints. The exit status is the
// device's: 0, sys.exit(n), 1 after an uncaught exception (traceback on stderr), EXIT_RESET
// after machine.reset(); EXIT_USAGE for bad arguments, EXIT_HOST for a host failure.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { copyIn, mirror } from "./flash.mjs";
import { gcCollector } from "./gc.mjs";
import { loadCapped, MIN_HEAP } from "./heap.mjs";
import { startNet } from "./net.mjs";

const EXIT_USAGE = 64;
const EXIT_HOST = 70;
const EXIT_RESET = 100;
const FLASH = "/flash";
const RUNTIME = "/runtime";
const HERE = path.dirname(fileURLToPath(import.meta.url));

function usage(message) {
  fs.writeSync(2, `host.mjs: ${message}\n`);
  process.exit(EXIT_USAGE);
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        dir: { type: "string" },
        heap: { type: "string", default: "65536" },
        main: { type: "string", default: "main" },
        path: { type: "string", multiple: true, default: [] },
        lib: { type: "string", default: path.join(HERE, "lib") },
      },
    });
  } catch (error) {
    usage(error.message);
  }
  const { values, positionals } = parsed;
  const isDir = (dir) => fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory();
  if (!values.dir || !isDir(values.dir)) usage("--dir must name the device's directory");
  for (const dir of values.path) if (!isDir(dir)) usage(`--path ${dir}: not a directory`);
  if (!isDir(values.lib)) usage(`--lib ${values.lib}: not a directory`);
  if (!/^\d+$/.test(values.heap) || Number(values.heap) < MIN_HEAP) {
    usage(`--heap must be a number of bytes, at least ${MIN_HEAP}`);
  }
  if (!/^[A-Za-z_][\w.]*$/.test(values.main)) usage("--main must be a module name");
  return { ...values, heap: Number(values.heap), argv: positionals };
}

// Collects output bytes and writes each completed line at once.
class LineWriter {
  constructor(fd) {
    this.fd = fd;
    this.bytes = [];
  }
  put(byte) {
    this.bytes.push(byte);
    if (byte === 10) this.flush();
  }
  flush() {
    const buffer = Buffer.from(this.bytes);
    this.bytes = [];
    for (let done = 0; done < buffer.length; ) {
      try {
        done += fs.writeSync(this.fd, buffer, done);
      } catch (error) {
        if (error.code !== "EAGAIN") throw error;
      }
    }
  }
}

const out = new LineWriter(1);
const err = new LineWriter(2);

function exit(code) {
  out.flush();
  err.flush();
  process.exit(code);
}

function hostFailure(error) {
  err.flush();
  fs.writeSync(2, `host.mjs: ${error.stack || error}\n`);
  exit(EXIT_HOST);
}

const SKIPPED_DIRS = new Set(["__pycache__", "node_modules"]);
const isCode = (name, isDir) =>
  isDir ? !name.startsWith(".") && !SKIPPED_DIRS.has(name) : /\.m?py$/.test(name);

async function main() {
  const opts = options();
  const deviceDir = fs.realpathSync(opts.dir);
  const { mp, memory } = await loadCapped(opts.heap, {
    linebuffer: false,
    stdout: (bytes) => out.put(bytes[0]),
    stderr: (bytes) => err.put(bytes[0]),
  });
  const FS = mp.FS;

  copyIn(FS, deviceDir, FLASH);
  copyIn(FS, opts.lib, RUNTIME, isCode);
  const codePaths = opts.path.map((dir, i) => {
    copyIn(FS, dir, `/path${i}`, isCode);
    return `/path${i}`;
  });
  FS.chdir(FLASH);
  mirror(FS, FLASH, deviceDir, hostFailure);

  const pause = new Int32Array(new SharedArrayBuffer(4));
  mp.registerJsModule("_ekhost", {
    collect: gcCollector(mp, memory),
    ...(await startNet(memory)),
    sleep_ms(ms) {
      Atomics.wait(pause, 0, 0, Math.max(0, ms || 0));
    },
    urandom(addr, n) {
      crypto.randomFillSync(new Uint8Array(memory.buffer, addr, n));
    },
    device_path: () => deviceDir,
    exit,
    EXIT_RESET,
  });

  const sysPath = [RUNTIME, "", ".frozen", `${FLASH}/lib`, ...codePaths];
  mp.runPython(
    `import sys\nsys.path[:] = ${JSON.stringify(sysPath)}\n` +
      `sys.argv[:] = ${JSON.stringify([opts.main, ...opts.argv])}`,
  );
  exit(mp.pyimport("_boot").run(opts.main));
}

main().catch(hostFailure);
