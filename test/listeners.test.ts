/**
 * Several listening sockets on one port (src/platform/listeners.ts). Node accepts one connection per listening socket
 * per turn of its event loop, so the gateway binds several with SO_REUSEPORT where Node has it (22.12+, the image's),
 * and one elsewhere, saying why. Here, against the kernel's own table of listening sockets (/proc/net/tcp): as many
 * sockets as this Node can bind, every connection answered by the one HTTP server whichever socket took it, and none
 * left listening after close.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { describe, it } from 'node:test';
import { listen, reusePortSupported } from '../src/platform/listeners.ts';

/** The listening TCP sockets the kernel holds for a loopback port (state 0A = LISTEN in /proc/net/tcp). */
function listeningSockets(port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields[1] === local && fields[3] === '0A').length;
}

/** One request on a connection of its own (no agent: each is a new connection the kernel must hand to a socket). */
function getOnNewConnection(port: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

describe('listening sockets', () => {
  it('reusePort is used only where Node has it: 22.12+ and 23.1+, on Linux or FreeBSD', () => {
    const cases: Array<[string, NodeJS.Platform, boolean]> = [
      ['20.20.2', 'linux', false],
      ['22.11.0', 'linux', false],
      ['22.12.0', 'linux', true],
      ['22.23.5', 'linux', true],
      ['23.0.0', 'linux', false],
      ['23.1.0', 'linux', true],
      ['24.0.0', 'linux', true],
      ['22.12.0', 'freebsd', true],
      ['22.12.0', 'darwin', false],
      ['24.0.0', 'win32', false],
    ];
    for (const [version, platform, expected] of cases) {
      assert.equal(reusePortSupported(version, platform), expected, `${version} on ${platform}`);
    }
  });

  it('binds as many sockets as this Node can, and one server answers every connection, whichever socket took it', async () => {
    let answered = 0;
    const server = http.createServer((_req, res) => {
      answered++;
      res.end('one server');
    });
    const listening = await listen(server, { host: '127.0.0.1', port: 0, backlog: 511, sockets: 4 });
    try {
      const expected = reusePortSupported() ? 4 : 1;
      assert.equal(listening.sockets, expected);
      assert.equal(listeningSockets(listening.port), expected, 'the kernel holds that many listening sockets');
      if (expected === 1) assert.match(listening.limitedBy ?? '', /no reusePort/);
      else assert.equal(listening.limitedBy, undefined);
      // enough fresh connections that, spread by the kernel's hash, every socket of the group takes some
      const replies = await Promise.all(Array.from({ length: 64 }, () => getOnNewConnection(listening.port)));
      assert.ok(replies.every((r) => r.status === 200 && r.body === 'one server'));
      assert.equal(answered, 64);
    } finally {
      await listening.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    assert.equal(listeningSockets(listening.port), 0, 'nothing left listening');
    await assert.rejects(getOnNewConnection(listening.port), /ECONNREFUSED/);
  });

  it('a port taken by another process is an error, and nothing is left bound', async () => {
    const other = http.createServer();
    await new Promise<void>((resolve) => other.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const { port } = other.address() as { port: number };
    const server = http.createServer();
    try {
      await assert.rejects(listen(server, { host: '127.0.0.1', port, backlog: 511, sockets: 4 }), /EADDRINUSE/);
      assert.equal(server.listening, false);
      assert.equal(listeningSockets(port), 1, 'only the other server');
    } finally {
      await new Promise<void>((resolve) => other.close(() => resolve()));
    }
  });
});
