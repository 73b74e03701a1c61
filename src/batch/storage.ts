import { randomBytes } from 'node:crypto';
import { constants, existsSync } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, realpath, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';

/**
 * Where batch inputs are read and outputs written. The batch code sees only this interface, so an S3 or GCS
 * implementation can be added without touching it. Paths are relative, '/'-separated keys.
 */
export interface BatchStorage {
  /** a stream of the object's bytes; rejects with StorageError('not_found' | 'unreadable') */
  openRead(key: string): Promise<Readable>;
  size(key: string): Promise<number>;
  /** an appendable object, first cut back to `length` bytes (the last committed checkpoint) */
  openAppend(key: string, length: number): Promise<AppendHandle>;
  /** writes a small object whole, atomically */
  writeWhole(key: string, body: string): Promise<void>;
  readWhole(key: string): Promise<string>;
}

export interface AppendHandle {
  /** appends (a string as UTF-8) and makes it durable before resolving; returns the new length */
  append(data: string | Uint8Array): Promise<number>;
  close(): Promise<void>;
}

/**
 * A refusal. Its message never names the key: keys are client-chosen paths that often name a ward or a patient, and
 * these messages end up in run records and logs.
 */
export class StorageError extends Error {
  override name = 'StorageError';
  readonly reason: 'outside' | 'not_found' | 'unreadable' | 'exists';
  constructor(reason: StorageError['reason'], message: string) {
    super(message);
    this.reason = reason;
  }
}

/** Where runs write; never an input (see `openRead`). */
/** An `s3://…` or `gs://…` key: a bucket's object (src/batch/buckets.ts), not a file in the data directory. */
export function isObjectUrl(value: unknown): value is string {
  return typeof value === 'string' && /^(s3|gs):\/\//.test(value);
}

export const RUNS_DIR = 'batches';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_NONBLOCK, O_DIRECTORY } = constants;

/** Linux: an open folder's handle names it in a path (`/proc/self/fd/<fd>/<name>`), as openat(2) does. */
const FD_DIR = '/proc/self/fd';

function failure(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
  // ELOOP: the last component is a symlink (O_NOFOLLOW); ENOTDIR: a component is not a directory
  if (code === 'ELOOP') return new StorageError('outside', `${what}: a symbolic link is not followed`);
  if (code === 'ENOENT' || code === 'ENOTDIR') return new StorageError('not_found', `${what}: no such file (${code})`);
  if (code === 'EEXIST') return new StorageError('exists', `${what}: it exists already`);
  return new StorageError('unreadable', `${what}: ${code}`);
}

/**
 * The local filesystem under one root (the data directory). No key reaches outside it, symlinks included: a file is
 * opened through its folders one by one, each opened relative to the one before through its handle and never through
 * a link (O_NOFOLLOW), then checked through its own handle (a regular file), so what is read or written is inside the
 * root whatever is renamed meanwhile. (Checking the path, then opening it, can be raced: a client that swaps a folder
 * of its area for a link to another's between the two reads the other's file.) Where /proc is missing (not Linux),
 * every directory on the way is checked to be a real one (its realpath is its own path) before and after the open.
 * Files and directories it creates are the service user's only (0600, 0700): outputs carry patient data.
 */
export class LocalStorage implements BatchStorage {
  readonly root: string;
  #realRoot: Promise<string> | undefined;
  readonly #anchored = existsSync(FD_DIR);

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** Resolves a key under the root lexically; refuses absolute keys, `..` and NUL bytes. */
  resolve(key: string): string {
    if (key.includes('\0') || path.isAbsolute(key) || key.split(/[\\/]/).includes('..')) {
      throw new StorageError('outside', 'the path must be relative to the data directory, without ".."');
    }
    const full = path.resolve(this.root, key);
    if (full !== this.root && !full.startsWith(this.root + path.sep)) {
      throw new StorageError('outside', 'the path is outside the data directory');
    }
    return full;
  }

  /** The key's absolute path under the root's real path, with every directory on the way checked. */
  async #checked(key: string): Promise<string> {
    const relative = path.relative(this.root, this.resolve(key));
    const full = path.join(await this.#root(), relative);
    const dir = path.dirname(full);
    const real = await realpath(dir).catch((err) => {
      throw failure(err, 'the folder');
    });
    if (real !== dir) throw new StorageError('outside', 'a folder on the way is a symbolic link');
    return full;
  }

  /** The root's real path: it may itself sit behind a link (/tmp on some systems); the operator chose it. */
  async #root(): Promise<string> {
    this.#realRoot ??= realpath(this.root);
    return this.#realRoot.catch((err) => {
      this.#realRoot = undefined;
      throw failure(err, 'the data directory');
    });
  }

  /** Opens without following a link anywhere under the root, and checks the opened file is a regular file. */
  async #open(key: string, flags: number, mode?: number): Promise<FileHandle> {
    if (!this.#anchored) return this.#openChecked(key, flags, mode);
    const parts = path.relative(this.root, this.resolve(key)).split(path.sep);
    const name = parts.pop() as string;
    let dir = await open(await this.#root(), O_RDONLY | O_DIRECTORY).catch((err) => {
      throw failure(err, 'the data directory');
    });
    try {
      for (const part of parts) {
        const at = `${FD_DIR}/${dir.fd}/${part}`;
        const next = await open(at, O_RDONLY | O_DIRECTORY | O_NOFOLLOW).catch(async (err) => {
          // a link is ENOTDIR here (O_DIRECTORY): told from a file on the way only for the refusal's reason
          const link =
            (err as NodeJS.ErrnoException).code === 'ENOTDIR' &&
            (await lstat(at).catch(() => undefined))?.isSymbolicLink();
          throw link
            ? new StorageError('outside', 'a folder on the way is a symbolic link')
            : failure(err, 'the folder');
        });
        await dir.close();
        dir = next;
      }
      const handle = await open(`${FD_DIR}/${dir.fd}/${name}`, flags | O_NOFOLLOW, mode).catch((err) => {
        throw failure(err, 'cannot open the file');
      });
      const stats = await handle.stat().catch(async (err) => {
        await handle.close();
        throw failure(err, 'cannot open the file');
      });
      if (!stats.isFile()) {
        await handle.close();
        throw new StorageError('unreadable', 'not a regular file');
      }
      return handle;
    } finally {
      await dir.close();
    }
  }

  /** #open where /proc is missing: the folders checked to be real directories before and after the open. */
  async #openChecked(key: string, flags: number, mode?: number): Promise<FileHandle> {
    const full = await this.#checked(key);
    const handle = await open(full, flags | O_NOFOLLOW, mode).catch((err) => {
      throw failure(err, 'cannot open the file');
    });
    try {
      if (!(await handle.stat()).isFile()) throw new StorageError('unreadable', 'not a regular file');
      // a folder swapped for a link between the check and the open would show here
      if ((await realpath(path.dirname(full))) !== path.dirname(full)) {
        throw new StorageError('outside', 'a folder on the way is a symbolic link');
      }
      return handle;
    } catch (err) {
      await handle.close();
      throw failure(err, 'cannot open the file');
    }
  }

  /** Creates the folders of a key one by one, each a real directory (an existing link is refused, never followed). */
  async #ensureDir(key: string): Promise<void> {
    const parts = path
      .relative(this.root, path.dirname(this.resolve(key)))
      .split(path.sep)
      .filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const dir = path.join(this.root, ...parts.slice(0, i));
      await mkdir(dir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw failure(err, 'cannot create the folder');
      });
      const s = await lstat(dir);
      if (!s.isDirectory()) throw new StorageError('outside', 'a folder on the way is not a directory');
    }
  }

  /** An input. Never a run's output: run folders are not inputs, whoever asks. */
  async openRead(key: string): Promise<Readable> {
    if (this.isRunOutput(key)) {
      throw new StorageError('outside', 'run outputs are not inputs');
    }
    return this.#stream(key);
  }

  /** A file a run wrote, for download. */
  async openOutput(key: string): Promise<Readable> {
    if (!this.isRunOutput(key)) throw new StorageError('outside', 'not a run output');
    return this.#stream(key);
  }

  isRunOutput(key: string): boolean {
    return this.resolve(key).startsWith(path.join(this.root, RUNS_DIR) + path.sep);
  }

  async #stream(key: string): Promise<Readable> {
    // O_NONBLOCK: opening a FIFO must not hang until a writer appears (it is then refused as not a regular file)
    const handle = await this.#open(key, O_RDONLY | O_NONBLOCK);
    return handle.createReadStream({ highWaterMark: 256 * 1024 });
  }

  async size(key: string): Promise<number> {
    const handle = await this.#open(key, O_RDONLY | O_NONBLOCK);
    try {
      return (await handle.stat()).size;
    } finally {
      await handle.close();
    }
  }

  /** Creates a run's folder; fails if anything is there already (nobody can have prepared it for us). */
  async createDir(key: string): Promise<void> {
    await this.#ensureDir(key);
    const full = await this.#checked(key);
    await mkdir(full, { mode: 0o700 }).catch((err) => {
      throw failure(err, 'cannot create the run folder');
    });
  }

  async openAppend(key: string, length: number): Promise<AppendHandle> {
    await this.#ensureDir(key);
    const handle = await this.#open(key, O_WRONLY | O_CREAT | O_APPEND, 0o600);
    await handle.truncate(length);
    let size = length;
    return {
      async append(data) {
        const bytes = typeof data === 'string' ? Buffer.from(data) : data;
        await handle.appendFile(bytes);
        await handle.datasync();
        size += bytes.length;
        return size;
      },
      close: () => handle.close(),
    };
  }

  async writeWhole(key: string, body: string): Promise<void> {
    await this.#ensureDir(key);
    const full = await this.#checked(key);
    // a fresh name opened exclusively, then renamed over the key: rename replaces a link, it never writes through one
    const temp = `${full}.${randomBytes(8).toString('hex')}.tmp`;
    const handle = await open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600).catch((err) => {
      throw failure(err, 'cannot write the file');
    });
    try {
      await handle.writeFile(body);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, full).catch(async (err) => {
      await unlink(temp).catch(() => {});
      throw failure(err, 'cannot write the file');
    });
  }

  async readWhole(key: string): Promise<string> {
    const handle = await this.#open(key, O_RDONLY | O_NONBLOCK);
    try {
      return await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  }
}
