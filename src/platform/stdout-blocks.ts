import { write as fsWrite, writeSync } from 'node:fs';

/**
 * A log destination that writes a file descriptor (stdout) in blocks: lines are kept as they come and joined into one
 * buffer once at least `blockBytes` are waiting (and no write is out), at least every `flushMs`, and synchronously on
 * the process's exit. A busy gateway thus makes a write (a thread-pool round trip, and a wake-up of whoever reads the
 * pipe: the container runtime) per block rather than per line.
 *
 * pino's own asynchronous destination (sonic-boom, `minLength`) does the same but appends each line to the block
 * string and measures its UTF-8 length on every line, which copies the block again per line: its cost grows with the
 * block size. Here a line costs an array push; the block is joined and encoded once.
 */
export class StdoutBlocks {
  readonly #fd: number;
  readonly #blockBytes: number;
  #lines: string[] = [];
  /** characters waiting in #lines (UTF-16 units: near enough to bytes for a threshold) */
  #waiting = 0;
  /** the block being written by the thread pool, if any */
  #writing: Buffer | undefined;
  #broken = false;
  readonly #timer: NodeJS.Timeout;

  constructor(o: { fd: number; blockBytes: number; flushMs: number }) {
    this.#fd = o.fd;
    this.#blockBytes = o.blockBytes;
    this.#timer = setInterval(() => this.flush(), o.flushMs);
    this.#timer.unref();
    process.once('exit', () => this.flushSync());
  }

  /** a block is being written by the thread pool */
  get writing(): boolean {
    return this.#writing !== undefined;
  }

  write(line: string): boolean {
    if (this.#broken) return true;
    this.#lines.push(line);
    this.#waiting += line.length;
    if (this.#writing === undefined && this.#waiting >= this.#blockBytes) this.flush();
    return true;
  }

  /** Starts writing what is waiting, unless a write is out (what waits then goes when it completes). */
  flush(cb?: (err?: Error) => void): void {
    if (this.#writing === undefined && this.#lines.length > 0 && !this.#broken) this.#send(this.#take(), 0);
    cb?.();
  }

  /** Writes everything not yet handed to the thread pool, now (the process is exiting). */
  flushSync(): void {
    if (this.#broken || this.#lines.length === 0) return;
    const block = this.#take();
    let offset = 0;
    // a non-blocking pipe that is full: its reader gets 10 ms at a time, 2 s in all (the process is exiting)
    for (let busy = 0; offset < block.length && busy < 200; ) {
      try {
        offset += writeSync(this.#fd, block, offset, block.length - offset);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        busy++;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    }
  }

  #take(): Buffer {
    const block = Buffer.from(this.#lines.length === 1 ? (this.#lines[0] as string) : this.#lines.join(''), 'utf8');
    this.#lines = [];
    this.#waiting = 0;
    return block;
  }

  #send(block: Buffer, offset: number): void {
    this.#writing = block;
    fsWrite(this.#fd, block, offset, block.length - offset, null, (err, written) => {
      if (err) {
        if (err.code === 'EAGAIN' || err.code === 'EBUSY') {
          // a non-blocking pipe that is full: give its reader time
          setTimeout(() => this.#send(block, offset), 20).unref();
          return;
        }
        // EPIPE (the reader went away) or a closed descriptor: logging stops, serving does not
        this.#broken = true;
        this.#writing = undefined;
        this.#lines = [];
        process.stderr.write(`log destination failed (${err.code ?? err.message}): no more log lines\n`);
        return;
      }
      if (offset + written < block.length) {
        this.#send(block, offset + written);
        return;
      }
      this.#writing = undefined;
      if (this.#waiting >= this.#blockBytes) this.flush();
    });
  }
}

let stdout: StdoutBlocks | undefined;

/** The process's one stdout destination (one timer, one exit hook, however many loggers write to it). */
export function stdoutBlocks(o: { blockBytes: number; flushMs: number }): StdoutBlocks {
  stdout ??= new StdoutBlocks({ fd: 1, ...o });
  return stdout;
}
