import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, realpath, rename, stat, writeFile } from 'node:fs/promises';
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
  /** appends and makes it durable before resolving; returns the new length */
  append(text: string): Promise<number>;
  close(): Promise<void>;
}

export class StorageError extends Error {
  override name = 'StorageError';
  readonly reason: 'outside' | 'not_found' | 'unreadable';
  constructor(reason: StorageError['reason'], message: string) {
    super(message);
    this.reason = reason;
  }
}

/** The local filesystem under one root (the data directory). No key may reach outside it, symlinks included. */
export class LocalStorage implements BatchStorage {
  readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
  }

  /** Resolves a key under the root; refuses absolute keys, `..` and NUL bytes. */
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

  async #existing(key: string): Promise<string> {
    const full = this.resolve(key);
    let real: string;
    try {
      real = await realpath(full);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new StorageError(code === 'ENOENT' ? 'not_found' : 'unreadable', `cannot open ${key} (${code})`);
    }
    const root = await realpath(this.root);
    if (real !== root && !real.startsWith(root + path.sep)) {
      throw new StorageError('outside', 'the path leads outside the data directory');
    }
    const s = await stat(real);
    if (!s.isFile()) throw new StorageError('unreadable', `${key} is not a file`);
    return real;
  }

  async openRead(key: string): Promise<Readable> {
    const real = await this.#existing(key);
    const handle = await open(real, 'r').catch((err: NodeJS.ErrnoException) => {
      throw new StorageError('unreadable', `cannot read ${key} (${err.code})`);
    });
    return handle.createReadStream({ highWaterMark: 256 * 1024 });
  }

  async size(key: string): Promise<number> {
    return (await stat(await this.#existing(key))).size;
  }

  async openAppend(key: string, length: number): Promise<AppendHandle> {
    const full = this.resolve(key);
    await mkdir(path.dirname(full), { recursive: true });
    const handle = await open(full, 'a+');
    await handle.truncate(length);
    let size = length;
    return {
      async append(text) {
        const bytes = Buffer.from(text);
        await handle.appendFile(bytes);
        await handle.datasync();
        size += bytes.length;
        return size;
      },
      close: () => handle.close(),
    };
  }

  async writeWhole(key: string, body: string): Promise<void> {
    const full = this.resolve(key);
    await mkdir(path.dirname(full), { recursive: true });
    await writeFile(`${full}.tmp`, body);
    await rename(`${full}.tmp`, full);
  }

  async readWhole(key: string): Promise<string> {
    return readFile(await this.#existing(key), 'utf8');
  }

  /** For downloads: a stream of a file written by a run. */
  createReadStream(key: string): Readable {
    return createReadStream(this.resolve(key));
  }
}
