import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTimeRow {
  function: string;
  /** file:line, shortened to the part after node_modules/ or the repo */
  location: string;
  selfMs: number;
  percent: number;
}

/**
 * Top functions by self time in a V8 .cpuprofile (as written by `node --cpu-prof`). `(idle)` is left out of the rows
 * and reported apart; `percent` is of the busy (non-idle) time.
 */
export function topSelfTime(
  file: string,
  repoRoot: string,
  limit = 20,
): { totalMs: number; idleMs: number; rows: SelfTimeRow[] } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, { fn: string; loc: string; us: number }>();
  let totalUs = 0;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    const node = byId.get(id);
    if (!node) return;
    const { functionName, url, lineNumber } = node.callFrame;
    let loc = url.replace(/^file:\/\//, '');
    const nm = loc.lastIndexOf('node_modules/');
    if (nm >= 0) loc = loc.slice(nm + 'node_modules/'.length);
    else if (loc.startsWith(repoRoot)) loc = loc.slice(repoRoot.length + 1);
    if (loc) loc = `${loc}:${lineNumber + 1}`;
    const fn = functionName || '(anonymous)';
    const key = `${fn} ${loc}`;
    const row = selfUs.get(key) ?? { fn, loc, us: 0 };
    row.us += delta;
    selfUs.set(key, row);
    totalUs += delta;
  });
  const idleUs = [...selfUs.values()].filter((r) => r.fn === '(idle)').reduce((a, r) => a + r.us, 0);
  const busyUs = totalUs - idleUs;
  const rows = [...selfUs.values()]
    .filter((r) => r.fn !== '(idle)')
    .sort((a, b) => b.us - a.us)
    .slice(0, limit)
    .map((r) => ({ function: r.fn, location: r.loc, selfMs: r.us / 1000, percent: (100 * r.us) / (busyUs || 1) }));
  return { totalMs: totalUs / 1000, idleMs: idleUs / 1000, rows };
}

/**
 * `--cpu-prof` writes one profile per thread (tsx adds a loader worker that idles): the main thread's is the one
 * with the most non-idle time.
 */
export function busiestProfile(
  dir: string,
  repoRoot: string,
): { file: string; summary: ReturnType<typeof topSelfTime> } | undefined {
  let best: { file: string; summary: ReturnType<typeof topSelfTime>; busyMs: number } | undefined;
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.cpuprofile')) continue;
    const file = path.join(dir, f);
    const summary = topSelfTime(file, repoRoot, 25);
    const busyMs = summary.totalMs - summary.idleMs;
    if (!best || busyMs > best.busyMs) best = { file, summary, busyMs };
  }
  return best;
}
