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
  readonly #maxWaitingBytes: number;
  /** lines dropped since the last block: what waits is bounded when the reader stops reading */
  #dropped = 0;
  #lines: string[] = [];
  /** characters waiting in #lines (UTF-16 units: near enough to bytes for a threshold) */
  #waiting = 0;
  /** the block being written by the thread pool, if any */
  #writing: Buffer | undefined;
  #broken = false;
  /** the rest of a block the pipe refused (full): retried on a timer, or written by flushSync on the way out */
  #retry: { block: Buffer; offset: number; timer: NodeJS.Timeout } | undefined;
  /** flush callbacks waiting for everything written so far to be out */
  #drained: ((err?: Error) => void)[] = [];
  readonly #timer: NodeJS.Timeout;

  /**
   * `maxWaitingBytes`: what may wait while writes are stuck (a pipe whose reader stopped reading); past it lines are
   * dropped and counted, and the next block says how many, so a stalled log pipeline costs log lines, never the
   * gateway's memory (default 8 MiB)
   */
  constructor(o: { fd: number; blockBytes: number; flushMs: number; maxWaitingBytes?: number }) {
    this.#fd = o.fd;
    this.#blockBytes = o.blockBytes;
    this.#maxWaitingBytes = o.maxWaitingBytes ?? 8 * 1024 * 1024;
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
    if (this.#waiting + line.length > this.#maxWaitingBytes) {
      this.#dropped++;
      return true;
    }
    this.#lines.push(line);
    this.#waiting += line.length;
    if (this.#writing === undefined && this.#waiting >= this.#blockBytes) this.flush();
    return true;
  }

  /** Starts writing what is waiting; `cb` is called once all of it is written (pino's logger.flush). */
  flush(cb?: (err?: Error) => void): void {
    if (this.#writing === undefined && this.#lines.length > 0 && !this.#broken) this.#send(this.#take(), 0);
    if (!cb) return;
    if (this.#writing === undefined) cb();
    else this.#drained.push(cb);
  }

  /**
   * Writes everything not yet handed to the thread pool, now (the process is exiting): the rest of a block the pipe
   * refused, then what waits. A block the thread pool is writing at that moment is its own.
   */
  flushSync(): void {
    if (this.#broken) return;
    const retry = this.#retry;
    if (retry) {
      clearTimeout(retry.timer);
      this.#retry = undefined;
      this.#writeNow(retry.block, retry.offset);
    }
    if (this.#lines.length > 0) this.#writeNow(this.#take(), 0);
  }

  #writeNow(block: Buffer, from: number): void {
    let offset = from;
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
    if (this.#dropped > 0) {
      // a line of the logs' own shape (level 40: warn), after the lines that were kept
      this.#lines.push(
        `{"level":40,"time":"${new Date().toISOString()}","msg":"log lines dropped: stdout was not read","dropped":${this.#dropped}}\n`,
      );
      this.#dropped = 0;
    }
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
          const timer = setTimeout(() => {
            this.#retry = undefined;
            this.#send(block, offset);
          }, 20);
          timer.unref();
          this.#retry = { block, offset, timer };
          return;
        }
        // EPIPE (the reader went away) or a closed descriptor: logging stops, serving does not
        this.#broken = true;
        this.#writing = undefined;
        this.#lines = [];
        process.stderr.write(`log destination failed (${err.code ?? err.message}): no more log lines\n`);
        for (const cb of this.#drained.splice(0)) cb(err);
        return;
      }
      if (offset + written < block.length) {
        this.#send(block, offset + written);
        return;
      }
      this.#writing = undefined;
      // a full block goes at once; so does what waits when a flush asked for everything
      if (this.#waiting >= this.#blockBytes || (this.#drained.length > 0 && this.#lines.length > 0)) {
        this.#send(this.#take(), 0);
        return;
      }
      for (const cb of this.#drained.splice(0)) cb();
    });
  }
}

let stdout: StdoutBlocks | undefined;

/** The process's one stdout destination (one timer, one exit hook, however many loggers write to it). */
export function stdoutBlocks(o: { blockBytes: number; flushMs: number }): StdoutBlocks {
  stdout ??= new StdoutBlocks({ fd: 1, ...o });
  return stdout;
}
