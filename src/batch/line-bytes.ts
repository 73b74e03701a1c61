import type { JsonSink } from '../serving/predictions.ts';

/**
 * A chunk's output lines written as UTF-8 straight into one growing buffer: the bytes of a line's fixed parts
 * (encoded once per chunk), ASCII text (numbers) and short plain strings (ids) copied in place, anything else encoded
 * by Buffer.write. What `Buffer.from(lines.join(''))` made, without a string per line: built from template pieces,
 * each line was a tree of small strings that the join flattened and the encoder walked again.
 */
export class ByteLines implements JsonSink {
  #buf: Buffer;
  #pos = 0;

  constructor(capacity = 64 * 1024) {
    this.#buf = Buffer.allocUnsafe(capacity);
  }

  get length(): number {
    return this.#pos;
  }

  /** room for `n` more bytes: the buffer doubles (copying what is written) when it runs out */
  #room(n: number): Buffer {
    const need = this.#pos + n;
    if (need > this.#buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.#buf.length * 2));
      this.#buf.copy(bigger, 0, 0, this.#pos);
      this.#buf = bigger;
    }
    return this.#buf;
  }

  /** bytes as they are (a line's fixed parts, encoded once) */
  raw(bytes: Uint8Array): void {
    const n = bytes.length;
    const buf = this.#room(n);
    let pos = this.#pos;
    if (n > 64) buf.set(bytes, pos);
    else for (let i = 0; i < n; i++) buf[pos + i] = bytes[i] as number;
    pos += n;
    this.#pos = pos;
  }

  /** text the caller knows is ASCII (a number as JSON writes it) */
  ascii(text: string): void {
    const n = text.length;
    const buf = this.#room(n);
    const pos = this.#pos;
    for (let i = 0; i < n; i++) buf[pos + i] = text.charCodeAt(i);
    this.#pos = pos + n;
  }

  /** a number as JSON.stringify writes it: an integer's digits written in place (no string), others as String writes them */
  number(v: number): void {
    if (Number.isInteger(v) && v > -1e15 && v < 1e15) {
      const buf = this.#room(17);
      let pos = this.#pos;
      // -0 is written 0, as JSON.stringify writes it
      if (v < 0) buf[pos++] = 0x2d;
      let n = v < 0 ? -v : v;
      let digits = 1;
      for (let t = n; t >= 10; t = Math.floor(t / 10)) digits++;
      for (let k = digits - 1; k >= 0; k--) {
        buf[pos + k] = 0x30 + (n % 10);
        n = Math.floor(n / 10);
      }
      this.#pos = pos + digits;
    } else this.ascii(Number.isFinite(v) ? String(v) : 'null');
  }

  /** any text, as UTF-8 (as Buffer.from encodes it: a lone surrogate becomes U+FFFD) */
  text(text: string): void {
    const buf = this.#room(text.length * 3);
    this.#pos += buf.write(text, this.#pos, 'utf8');
  }

  /** a string as JSON.stringify writes it: printable ASCII without `"` or `\` copied between quotes, else stringified */
  jsonString(value: string): void {
    const n = value.length;
    const buf = this.#room(n + 2);
    const pos = this.#pos;
    buf[pos] = 0x22;
    for (let i = 0; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
        this.text(JSON.stringify(value));
        return;
      }
      buf[pos + 1 + i] = c;
    }
    buf[pos + 1 + n] = 0x22;
    this.#pos = pos + n + 2;
  }

  /** what was written (a view of the buffer: the writer is not used after) */
  bytes(): Buffer {
    return this.#buf.subarray(0, this.#pos);
  }
}
