/**
 * A TCP relay to the test Redis that watches the commands clients send, to stop a real client at an exact point
 * without stubbing it or Redis: `freezeAfter(marker)` stops relaying anything on every connection once a command
 * containing `marker` has been passed on (the client is then killed: a crash right after that step);
 * `holdRepliesAfter(marker)` keeps back Redis's answers on the connection that sent it (the commands still go
 * through), so a test sees what the client sends before it hears back; `rewriteOnce` changes a key in one command.
 */
import net from 'node:net';
import { REDIS_URL } from './redis.ts';

const REDIS = new URL(REDIS_URL);

interface Hold {
  marker: string;
  /** the connection that sent the marker, once it has */
  socket?: net.Socket;
  held: Buffer[];
  /** what that connection sent after the marker */
  sentAfter: string;
  reached: () => void;
}

export class RedisRelay {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #freezeMarker: string | undefined;
  #onFrozen: (() => void) | undefined;
  #hold: Hold | undefined;
  #rewrite: { marker: string; pattern: RegExp; replacement: string; done: () => void } | undefined;
  frozen = false;
  port = 0;

  constructor() {
    this.#server = net.createServer((client) => {
      const upstream = net.connect(Number(REDIS.port || 6379), REDIS.hostname);
      this.#sockets.add(client).add(upstream);
      let tail = '';
      client.on('data', (chunk: Buffer) => {
        if (this.frozen) return;
        upstream.write(this.#rewritten(chunk));
        const text = tail + chunk.toString('latin1');
        tail = text.slice(-64);
        if (this.#freezeMarker && text.includes(this.#freezeMarker)) {
          this.frozen = true;
          this.#onFrozen?.();
        }
        const hold = this.#hold;
        if (hold?.socket === client) hold.sentAfter += chunk.toString('latin1');
        else if (hold && !hold.socket && text.includes(hold.marker)) {
          hold.socket = client;
          hold.sentAfter = text.slice(text.indexOf(hold.marker) + hold.marker.length);
          hold.reached();
        }
      });
      upstream.on('data', (chunk: Buffer) => {
        if (this.frozen) return;
        if (this.#hold?.socket === client) this.#hold.held.push(chunk);
        else client.write(chunk);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
    });
  }

  /** the chunk, or once, with `pattern` replaced in the first chunk that contains the rewrite's marker */
  #rewritten(chunk: Buffer): Buffer {
    const rule = this.#rewrite;
    const text = chunk.toString('latin1');
    if (!rule || !text.includes(rule.marker) || !rule.pattern.test(text)) return chunk;
    this.#rewrite = undefined;
    const out = text.replace(rule.pattern, rule.replacement);
    // RESP states each argument's length: a replacement of another length would break the command, not fail it
    if (out.length !== text.length) throw new Error('a rewrite must keep the length');
    rule.done();
    return Buffer.from(out, 'latin1');
  }

  /**
   * In the first command sent that contains `marker` (and `pattern`), replaces `pattern` by `replacement` of the same
   * length, once: a real command reaches Redis with another key, and the client gets Redis's real answer to it.
   */
  rewriteOnce(marker: string, pattern: RegExp, replacement: string): Promise<void> {
    return new Promise((done) => {
      this.#rewrite = { marker, pattern, replacement, done };
    });
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as net.AddressInfo).port;
  }

  /** resolves once a command containing `marker` has been relayed (and everything after it is held back) */
  freezeAfter(marker: string): Promise<void> {
    this.#freezeMarker = marker;
    return new Promise((resolve) => {
      this.#onFrozen = resolve;
    });
  }

  /** resolves once a command containing `marker` has been relayed; that connection hears nothing until `letReplies` */
  holdRepliesAfter(marker: string): Promise<void> {
    return new Promise((resolve) => {
      this.#hold = { marker, held: [], sentAfter: '', reached: resolve };
    });
  }

  /** what the held connection has sent since the marker (commands as RESP text) */
  get sentAfterMarker(): string {
    return this.#hold?.sentAfter ?? '';
  }

  /** passes on the answers held back, and relays normally from now on */
  letReplies(): void {
    const hold = this.#hold;
    this.#hold = undefined;
    for (const chunk of hold?.held ?? []) hold?.socket?.write(chunk);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
