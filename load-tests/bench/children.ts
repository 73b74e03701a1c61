import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import net from 'node:net';

/** A child process the bench started, with the tail of its output kept for error messages. */
export interface Child {
  name: string;
  proc: ChildProcess;
  /** resolves with the exit code (or signal name) when the process ends */
  exited: Promise<number | string>;
  /** the last `bytes` (default 16 KB) of stdout+stderr */
  tail(bytes?: number): string;
  /** set once the process has exited */
  exitStatus: number | string | undefined;
}

const TAIL_BYTES = 16 * 1024;

/**
 * Every child the bench starts goes through here, so all of them are stopped on the way out: normal end, error,
 * SIGINT/SIGTERM, or an uncaught exception (see `installExitHandlers`).
 */
export class Children {
  readonly #live = new Set<Child>();
  #closed = false;

  spawn(name: string, command: string, args: string[], options: SpawnOptions & { keepOutput?: boolean } = {}): Child {
    if (this.#closed) throw new Error(`not starting ${name}: the bench is shutting down`);
    const proc = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    let buffer = '';
    const keep = (chunk: Buffer) => {
      if (options.keepOutput === false) return;
      buffer += chunk.toString('utf8');
      if (buffer.length > TAIL_BYTES * 2) buffer = buffer.slice(-TAIL_BYTES);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    const child: Child = {
      name,
      proc,
      exitStatus: undefined,
      tail: (bytes = TAIL_BYTES) => buffer.slice(-Math.min(bytes, TAIL_BYTES)),
      exited: new Promise((resolve) => {
        proc.once('error', (err) => {
          buffer += `\n[spawn error] ${err.message}\n`;
          child.exitStatus = 'spawn-error';
          this.#live.delete(child);
          resolve('spawn-error');
        });
        proc.once('exit', (code, signal) => {
          child.exitStatus = code ?? signal ?? 'unknown';
          this.#live.delete(child);
          resolve(child.exitStatus);
        });
      }),
    };
    this.#live.add(child);
    return child;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(child: Child, graceMs = 5000): Promise<number | string> {
    if (child.exitStatus !== undefined) return child.exitStatus;
    child.proc.kill('SIGTERM');
    const timer = setTimeout(() => child.proc.kill('SIGKILL'), graceMs);
    const status = await child.exited;
    clearTimeout(timer);
    return status;
  }

  async stopAll(graceMs = 5000): Promise<void> {
    await Promise.all([...this.#live].map((c) => this.stop(c, graceMs)));
  }

  /** Last resort, synchronous (from process 'exit'): SIGKILL whatever is still running. */
  killAllNow(): void {
    for (const c of this.#live) c.proc.kill('SIGKILL');
  }

  installExitHandlers(onSignal: (signal: NodeJS.Signals) => Promise<void>): void {
    process.once('exit', () => this.killAllNow());
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(signal, () => {
        this.#closed = true;
        void onSignal(signal).finally(() => {
          this.killAllNow();
          process.exit(130);
        });
      });
    }
  }
}

/** A port nobody listens on right now (the usual small race until the child binds it). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Polls `url` until it answers 200; fails early if `child` exits. */
export async function waitForOk(url: string, child: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (child.exitStatus !== undefined) {
      throw new Error(`${child.name} exited (${child.exitStatus}) before ${url} answered 200:\n${child.tail(4000)}`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${child.name}: ${url} not 200 within ${timeoutMs} ms (last: ${last}):\n${child.tail(4000)}`);
}
