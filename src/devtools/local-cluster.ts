/**
 * A real Redis Cluster on this machine, for tests and measurements: six `redis-server --cluster-enabled yes`
 * processes on free ports in a temp dir, joined by `redis-cli --cluster create … --cluster-replicas 1` into three
 * primaries and three replicas. Memory only; `noeviction` as BullMQ requires.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';

export interface ClusterNode {
  port: number;
  child: ChildProcess;
  exited: Promise<void>;
}

export interface NodeInfo {
  id: string;
  port: number;
  role: 'master' | 'slave';
  /** the primary's id, for a replica */
  primaryId?: string;
  failed: boolean;
  slots: Array<[number, number]>;
}

/** Node timeout: how long a silent primary has before its replica takes over (short, but far above a busy tick). */
const NODE_TIMEOUT_MS = 3000;
const WAIT_MS = 60_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A free port whose cluster bus port (+10000) is free as well. */
async function freePortPair(taken: Set<number>): Promise<number> {
  const listen = (port: number) =>
    new Promise<number | undefined>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(undefined));
      server.listen(port, '127.0.0.1', () => {
        const p = (server.address() as net.AddressInfo).port;
        server.close(() => resolve(p));
      });
    });
  for (;;) {
    const port = await listen(0);
    if (port === undefined || port > 55_000 || taken.has(port)) continue;
    if ((await listen(port + 10_000)) === undefined) continue;
    taken.add(port);
    return port;
  }
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = WAIT_MS): Promise<void> {
  const started = performance.now();
  while (!(await check().catch(() => false))) {
    if (performance.now() - started > timeoutMs) throw new Error(`local cluster: timed out waiting for ${what}`);
    await sleep(50);
  }
}

export function parseClusterNodes(text: string): NodeInfo[] {
  return text
    .trim()
    .split('\n')
    .map((line) => {
      const [id, addr, flags, primary, , , , , ...slots] = line.split(' ');
      const f = (flags ?? '').split(',');
      return {
        id: id as string,
        port: Number((addr ?? '').split('@')[0]?.split(':')[1]),
        role: f.includes('master') ? ('master' as const) : ('slave' as const),
        ...(primary && primary !== '-' ? { primaryId: primary } : {}),
        failed: f.includes('fail') || f.includes('fail?'),
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [a, b] = s.split('-');
            return [Number(a), Number(b ?? a)] as [number, number];
          }),
      };
    });
}

export class LocalCluster {
  readonly nodes: ClusterNode[];
  readonly #dir: string;

  private constructor(nodes: ClusterNode[], dir: string) {
    this.nodes = nodes;
    this.#dir = dir;
  }

  /** `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,…` (TRIAGE_REDIS_URL's cluster form) */
  get url(): string {
    return `redis-cluster://${this.live()
      .map((n) => `127.0.0.1:${n.port}`)
      .join(',')}`;
  }

  live(): ClusterNode[] {
    return this.nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null);
  }

  static #spawn(port: number, dir: string): ClusterNode {
    // biome-ignore format: one flag and its value a line
    const child = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir,
      '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`,
      '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
      '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction',
    ], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    return { port, child, exited };
  }

  static async start(): Promise<LocalCluster> {
    for (const tool of ['redis-server', 'redis-cli']) {
      const probe = spawnSync(tool, ['--version'], { stdio: 'ignore' });
      if (probe.error || probe.status !== 0)
        throw new Error(`${tool} is missing (Debian: apt-get install redis-server)`);
    }
    const dir = await mkdtemp(path.join(tmpdir(), 'triage-cluster-'));
    const taken = new Set<number>();
    const nodes: ClusterNode[] = [];
    for (let i = 0; i < 6; i++) {
      const port = await freePortPair(taken);
      nodes.push(LocalCluster.#spawn(port, dir));
    }
    const cluster = new LocalCluster(nodes, dir);
    // a process that ends without stop() (a failed script, a test runner's timeout) takes its servers with it
    process.once('exit', () => {
      for (const n of cluster.live()) n.child.kill('SIGKILL');
    });
    try {
      for (const n of nodes) await until(`redis-server on ${n.port}`, () => cluster.#ping(n.port));
      const create = spawnSync(
        'redis-cli',
        ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '1', '--cluster-yes'],
        { encoding: 'utf8', timeout: WAIT_MS },
      );
      if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stdout}${create.stderr}`);
      await cluster.waitHealthy();
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  async #command<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
    const r = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r.on('error', () => {});
    try {
      await r.connect();
      return await fn(r);
    } finally {
      r.disconnect();
    }
  }

  async #ping(port: number): Promise<boolean> {
    return (await this.#command(port, (r) => r.ping())) === 'PONG';
  }

  /** Every live node says cluster_state:ok, three primaries serve all slots, and each has a synced replica. */
  async waitHealthy(): Promise<void> {
    await until('cluster_state:ok with three primaries and synced replicas', async () => {
      for (const n of this.live()) {
        const info = await this.#command(n.port, (r) => r.cluster('INFO'));
        if (!String(info).includes('cluster_state:ok')) return false;
      }
      const topology = await this.topology();
      const primaries = topology.filter((t) => t.role === 'master' && !t.failed && t.slots.length > 0);
      if (primaries.length !== 3) return false;
      for (const p of primaries) {
        const replica = topology.find((t) => t.primaryId === p.id && !t.failed);
        if (!replica) return false;
        const info = await this.#command(replica.port, (r) => r.info('replication'));
        if (!info.includes('master_link_status:up')) return false;
      }
      return true;
    });
  }

  /** CLUSTER NODES as seen from a live node. */
  async topology(): Promise<NodeInfo[]> {
    const [first] = this.live();
    if (!first) throw new Error('no live cluster node');
    return parseClusterNodes(String(await this.#command(first.port, (r) => r.cluster('NODES'))));
  }

  /** The slot of a key, as Redis computes it. */
  async keySlot(key: string): Promise<number> {
    const [first] = this.live();
    return Number(await this.#command(first?.port ?? 0, (r) => r.cluster('KEYSLOT', key)));
  }

  /** The primary serving a slot now. */
  async primaryOf(slot: number): Promise<NodeInfo> {
    const owner = (await this.topology()).find(
      (t) => t.role === 'master' && !t.failed && t.slots.some(([a, b]) => slot >= a && slot <= b),
    );
    if (!owner) throw new Error(`no primary serves slot ${slot}`);
    return owner;
  }

  /**
   * SIGKILLs the primary serving `slot` (no goodbye, as a crashed machine) and waits until its replica serves the
   * slot and the cluster says ok again. Returns the old and the new primary's ports.
   */
  async killPrimaryOf(slot: number): Promise<{ killed: number; promoted: number }> {
    const primary = await this.primaryOf(slot);
    const node = this.nodes.find((n) => n.port === primary.port);
    if (!node) throw new Error(`slot ${slot}: primary on ${primary.port} is not ours`);
    node.child.kill('SIGKILL');
    await node.exited;
    let promoted = 0;
    await until(`a replica promoted for slot ${slot}`, async () => {
      const now = await this.primaryOf(slot);
      promoted = now.port;
      if (now.port === primary.port) return false;
      for (const n of this.live()) {
        if (!String(await this.#command(n.port, (r) => r.cluster('INFO'))).includes('cluster_state:ok')) return false;
      }
      return true;
    });
    return { killed: primary.port, promoted };
  }

  /** Starts a killed node again on its port and config (it rejoins as a replica), and waits for a healthy cluster. */
  async restart(port: number): Promise<void> {
    const i = this.nodes.findIndex((n) => n.port === port);
    if (i < 0) throw new Error(`no node on ${port}`);
    this.nodes[i] = LocalCluster.#spawn(port, this.#dir);
    await until(`redis-server on ${port}`, () => this.#ping(port));
    await this.waitHealthy();
  }

  /** The node's replica (by port) or, for a replica, itself. */
  async replicaOf(primaryPort: number): Promise<number> {
    const topology = await this.topology();
    const primary = topology.find((t) => t.port === primaryPort);
    const replica = topology.find((t) => t.primaryId === primary?.id && !t.failed);
    if (!replica) throw new Error(`no replica of ${primaryPort}`);
    return replica.port;
  }

  /**
   * Freezes a node (SIGSTOP: it answers nothing, replication included, from this moment) until `thaw`. Keep it
   * shorter than the node timeout, or the cluster fails it over.
   */
  freeze(port: number): void {
    this.#node(port).child.kill('SIGSTOP');
  }

  thaw(port: number): void {
    this.#node(port).child.kill('SIGCONT');
  }

  #node(port: number): ClusterNode {
    const node = this.nodes.find((n) => n.port === port);
    if (!node) throw new Error(`no node on ${port}`);
    return node;
  }

  async stop(): Promise<void> {
    for (const n of this.nodes) if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGKILL');
    await Promise.all(this.nodes.map((n) => n.exited));
    await rm(this.#dir, { recursive: true, force: true });
  }
}
