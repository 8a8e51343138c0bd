// The device's flash: a host directory loaded into the in-memory file system (MEMFS) at a
// mount point, with every change mirrored back to the host before the call returns to
// MicroPython (write-through). Killing the process at any point therefore loses nothing
// that a write(), close(), rename(), remove(), mkdir() or rmdir() has completed.
import fs from "node:fs";
import path from "node:path";

const O_ACCMODE = 3; // O_WRONLY = 1, O_RDWR = 2

// Copies the host tree at hostDir to memDir; keep(name, isDir) filters entries.
export function copyIn(FS, hostDir, memDir, keep = () => true) {
  FS.mkdirTree(memDir);
  for (const name of fs.readdirSync(hostDir)) {
    const hostPath = path.join(hostDir, name);
    const memPath = `${memDir}/${name}`;
    const stat = fs.statSync(hostPath);
    if (stat.isDirectory() && keep(name, true)) copyIn(FS, hostPath, memPath, keep);
    else if (stat.isFile() && keep(name, false)) FS.writeFile(memPath, fs.readFileSync(hostPath));
  }
}

// From now on, mirror every change under mount to hostDir. onFailure(error) is called if
// the host refuses a change: the flash and its mirror have then diverged.
export function mirror(FS, mount, hostDir, onFailure) {
  const inFlash = (p) => p === mount || p.startsWith(`${mount}/`);
  const hostPath = (p) => path.join(hostDir, p.slice(mount.length));
  const absolute = (p) => path.posix.resolve(FS.cwd(), p);
  const hostFds = new Map(); // MEMFS stream -> host fd, for files open for writing
  const original = {};
  for (const name of ["open", "write", "close", "rename", "unlink", "rmdir", "mkdir"]) {
    original[name] = FS[name].bind(FS);
  }
  const onHost = (action) => {
    try {
      action();
    } catch (error) {
      onFailure(error);
    }
  };

  FS.open = (p, flags, mode) => {
    const stream = original.open(p, flags, mode);
    if (inFlash(stream.path) && FS.isFile(stream.node.mode) && stream.flags & O_ACCMODE) {
      onHost(() => {
        const fd = fs.openSync(hostPath(stream.path), fs.constants.O_RDWR | fs.constants.O_CREAT);
        hostFds.set(stream, fd);
        fs.ftruncateSync(fd, stream.node.usedBytes); // O_TRUNC happened inside open
      });
    }
    return stream;
  };
  FS.write = (stream, buffer, offset, length, position, canOwn) => {
    const n = original.write(stream, buffer, offset, length, position, canOwn);
    const fd = hostFds.get(stream);
    if (fd !== undefined && n > 0) {
      // Without an explicit position (plain or O_APPEND write) the stream has just moved past it.
      onHost(() => fs.writeSync(fd, buffer, offset, n, position ?? stream.position - n));
    }
    return n;
  };
  FS.close = (stream) => {
    const fd = hostFds.get(stream);
    original.close(stream);
    if (fd !== undefined) {
      hostFds.delete(stream);
      onHost(() => fs.closeSync(fd));
    }
  };
  FS.rename = (from, to) => {
    [from, to] = [absolute(from), absolute(to)];
    original.rename(from, to);
    onHost(() => {
      if (inFlash(from) && inFlash(to)) fs.renameSync(hostPath(from), hostPath(to));
      else if (inFlash(from)) fs.rmSync(hostPath(from), { recursive: true });
      else if (inFlash(to)) copyOut(FS, to, hostPath(to));
    });
  };
  FS.unlink = (p) => {
    p = absolute(p);
    original.unlink(p);
    if (inFlash(p)) onHost(() => fs.unlinkSync(hostPath(p)));
  };
  FS.rmdir = (p) => {
    p = absolute(p);
    original.rmdir(p);
    if (inFlash(p)) onHost(() => fs.rmdirSync(hostPath(p)));
  };
  FS.mkdir = (p, mode) => {
    p = absolute(p);
    const node = original.mkdir(p, mode);
    if (inFlash(p)) onHost(() => fs.mkdirSync(hostPath(p)));
    return node;
  };
}

// Copies the MEMFS tree at memPath to the host (a file or directory moved into the flash).
function copyOut(FS, memPath, hostPath) {
  if (!FS.isDir(FS.stat(memPath).mode)) {
    fs.writeFileSync(hostPath, FS.readFile(memPath));
    return;
  }
  fs.mkdirSync(hostPath);
  for (const name of FS.readdir(memPath)) {
    if (name !== "." && name !== "..") copyOut(FS, `${memPath}/${name}`, path.join(hostPath, name));
  }
}
