/**
 * StdoutBlocks (src/platform/stdout-blocks.ts): the gateway's log destination writes in blocks, keeps the lines' order
 * across blocks, and writes what waits on flush and on flushSync (the process's exit).
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { StdoutBlocks } from '../src/platform/stdout-blocks.ts';

function target() {
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'stdout-blocks-')), 'out.log');
  return { file, fd: openSync(file, 'w'), text: () => readFileSync(file, 'utf8') };
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

async function until(what: () => boolean, label: string) {
  for (let i = 0; i < 2000 && !what(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(what(), label);
}

describe('StdoutBlocks', () => {
  it('writes nothing below a block, a block once it is full, the rest on flush', async () => {
    const t = target();
    const out = new StdoutBlocks({ fd: t.fd, blockBytes: 100, flushMs: 3_600_000 });
    for (let i = 0; i < 3; i++) out.write(`line ${i} é\n`);
    await turns(20);
    assert.equal(t.text(), '', 'no write was started for 3 short lines');
    out.write(`${'x'.repeat(100)}\n`);
    await until(() => t.text().split('\n').length === 5, 'the full block was written');
    assert.equal(t.text(), `line 0 é\nline 1 é\nline 2 é\n${'x'.repeat(100)}\n`);
    out.write('tail\n');
    await turns(20);
    assert.ok(!t.text().includes('tail'));
    out.flush();
    await until(() => t.text().endsWith('tail\n'), 'flush wrote the waiting line');
  });

  it('flush(cb) calls back once every line written so far is out, also those behind a write in flight', async () => {
    const t = target();
    const out = new StdoutBlocks({ fd: t.fd, blockBytes: 100, flushMs: 3_600_000 });
    out.write(`${'a'.repeat(120)}\n`); // a full block: its write is out
    assert.equal(out.writing, true);
    out.write('behind\n'); // waits behind it, below a block
    await new Promise<void>((resolve, reject) => out.flush((err) => (err ? reject(err) : resolve())));
    assert.equal(t.text(), `${'a'.repeat(120)}\nbehind\n`);
  });

  it('keeps the order of many lines across blocks and writes, and flushSync writes what waits', async () => {
    const t = target();
    const out = new StdoutBlocks({ fd: t.fd, blockBytes: 1000, flushMs: 3_600_000 });
    const want: string[] = [];
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 40; i++) {
        const line = JSON.stringify({ round, i, s: 'ü'.repeat(i) });
        want.push(line);
        out.write(`${line}\n`);
      }
      await turns(1);
    }
    // once the thread pool's write is done, what waits goes synchronously
    await until(() => t.text().length > 0 && !out.writing, 'blocks were written');
    for (let i = 0; i < 3; i++) {
      want.push(`last ${i}`);
      out.write(`last ${i}\n`);
    }
    assert.ok(!t.text().includes('last'), 'lines below a block wait');
    out.flushSync();
    await until(() => t.text().split('\n').length - 1 === want.length, 'every line was written');
    assert.deepEqual(t.text().trimEnd().split('\n'), want);
  });

  it('bounds what waits while nothing is written: past the bound lines are dropped, counted, and the next block says so', () => {
    const t = target();
    // a block larger than the bound: no write starts, as when the reader has stopped reading and a write is stuck
    const out = new StdoutBlocks({ fd: t.fd, blockBytes: 1_000_000, flushMs: 3_600_000, maxWaitingBytes: 1000 });
    const line = `${'k'.repeat(99)}\n`; // 100 bytes
    for (let i = 0; i < 25; i++) out.write(line);
    out.flushSync();
    const lines = t.text().trimEnd().split('\n');
    assert.equal(lines.length, 11, 'ten lines kept, then the note');
    assert.ok(lines.slice(0, 10).every((l) => l === 'k'.repeat(99)));
    const note = JSON.parse(lines[10] as string) as { level: number; msg: string; dropped: number };
    assert.equal(note.level, 40);
    assert.equal(note.dropped, 15);
    // writing resumes below the bound, and the count starts again
    out.write('after\n');
    out.flushSync();
    assert.ok(t.text().endsWith('after\n'));
  });
});

describe('StdoutBlocks on a pipe whose reader stalls', () => {
  it('retries a block a full non-blocking pipe refused (EAGAIN), and every line arrives in order once the reader reads', async () => {
    // `cat` copies its stdin to its stdout; while its stdout is not read, it stops reading its stdin, and that pipe
    // (non-blocking on our side, as a container's stdout is) fills up
    const cat = spawn('cat', [], { stdio: ['pipe', 'pipe', 'ignore'] });
    const chunks: Buffer[] = [];
    cat.stdout.on('data', (c: Buffer) => chunks.push(c));
    cat.stdout.pause();
    const fd = (cat.stdin as unknown as { _handle: { fd: number } })._handle.fd;
    const out = new StdoutBlocks({ fd, blockBytes: 16 * 1024, flushMs: 3_600_000 });
    const want: string[] = [];
    try {
      // far more than the pipes and cat's buffer hold together (a few hundred KiB)
      for (let i = 0; i < 4000; i++) {
        const line = `${i} ${'p'.repeat(400)}`;
        want.push(line);
        out.write(`${line}\n`);
        if (i % 100 === 0) await new Promise((r) => setImmediate(r));
      }
      out.flush();
      await until(() => out.writing, 'a write is out');
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(out.writing, 'the write is still waiting on the full pipe');
      cat.stdout.resume();
      await new Promise<void>((resolve, reject) => out.flush((err) => (err ? reject(err) : resolve())));
      const received = () => Buffer.concat(chunks).toString('utf8');
      await until(() => received().split('\n').length - 1 === want.length, 'every line came through cat');
      assert.deepEqual(received().trimEnd().split('\n'), want);
    } finally {
      cat.kill();
    }
  });
});
