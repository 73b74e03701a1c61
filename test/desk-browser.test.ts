/**
 * The review desk in a real browser (Debian's chromium through playwright-core): a reviewer signs in, sees the urgent
 * note first, reads it decoded from its DocumentReference, amends it with the keyboard, and the client's receiver
 * gets the signed event; a second reviewer's late decision shows the conflict; every page passes axe-core with no
 * serious violations, under the desk's own CSP; an admin sees the pictures of a model (shadow comparison, monitoring)
 * drawn, accessible too. Screenshots go to test-results/.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type DeskGateway, deskGateway, documentInput, submitHeld } from './desk-support.ts';
import { deletePrefix, makeKeys, makePrefix, NOTES, Receiver, SICK_VITALS, waitFor } from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('desk-browser');
const SHOTS = new URL('../test-results/', import.meta.url);
let gw: DeskGateway;
let receiver: Receiver;
let browser: Browser;
let axeSource: string;

before(async () => {
  receiver = await Receiver.start(keys.secrets.client);
  // deterioration: a sync model with a shadow version and reference profiles, for the pictures
  gw = await deskGateway(prefix, keys, ['deterioration']);
  axeSource = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  await mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
});
after(async () => {
  await browser?.close();
  await gw?.close();
  await receiver?.close();
  await deletePrefix(prefix);
});

/** Runs axe-core in the page (evaluated, so the page's CSP stays on) and refuses serious or critical violations. */
async function accessible(page: Page, name: string): Promise<void> {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    // biome-ignore lint/suspicious/noExplicitAny: axe-core is evaluated into the page as a global
    const result = await (globalThis as any).axe.run(document, { resultTypes: ['violations'] });
    return (result.violations as Array<{ id: string; impact: string; nodes: unknown[] }>).map((v) => ({
      id: v.id,
      impact: v.impact,
      nodes: v.nodes.length,
    }));
  });
  const serious = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(serious, [], `${name}: ${JSON.stringify(serious)}`);
  await page.screenshot({ path: new URL(`desk-${name}.png`, SHOTS).pathname, fullPage: true });
}

async function signIn(page: Page, key: string): Promise<void> {
  await page.goto(`${gw.url}/desk/reviews`);
  await page.waitForSelector('#credential');
  await page.fill('#credential', key);
  await page.click('button[type=submit]');
  await page.waitForSelector('h1:has-text("Waiting for review")');
}

test('sign in, urgent first, the decoded note, amend by keyboard, the signed callback; a late decision is a conflict', async () => {
  const routine = await submitHeld(gw, keys.client, { text: NOTES.routine }, receiver.url('/desk'));
  const urgent = await submitHeld(gw, keys.client, documentInput(NOTES.urgent), receiver.url('/desk'));

  const first = await browser.newContext();
  const page = await first.newPage();
  const cspErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
  await page.goto(`${gw.url}/desk/sign-in`);
  await page.waitForSelector('#credential');
  await accessible(page, 'sign-in');
  await signIn(page, keys.reviewer);

  // the urgent note was held after the routine one, yet comes first
  const rows = await page.locator('#queue tbody tr').evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-id')));
  assert.deepEqual(rows, [urgent, routine]);
  assert.equal(await page.locator('#queue tbody tr').first().locator('.predicted').textContent(), 'urgent-follow-up');
  await accessible(page, 'queue');

  // a second reviewer opens the same hold before the first decides
  const second = await browser.newContext();
  const late = await second.newPage();
  await signIn(late, keys.reviewer2);
  await late.goto(`${gw.url}/desk/reviews/${urgent}`);
  await late.waitForSelector('#decide');

  await page.keyboard.press('o');
  await page.waitForSelector('#note');
  assert.equal(await page.locator('#note').textContent(), NOTES.urgent, 'the note, decoded from base64');
  await accessible(page, 'hold');

  await page.keyboard.press('m');
  assert.equal(await page.locator('input[name=decision][value=amend]').isChecked(), true);
  await page.check('input[name="output.category"][value="routine-follow-up"]');
  await page.fill('#reason', 'stable angina, already under cardiology');
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('p[role=status]');

  await waitFor(() => receiver.events.has(`evt-${urgent}-released`), 'the signed release callback');
  const event = receiver.events.get(`evt-${urgent}-released`);
  const data = event?.data as { result: { output: { predictions: Array<{ category: string }> }; amended: boolean } };
  assert.equal(data.result.amended, true);
  assert.equal(data.result.output.predictions[0]?.category, 'routine-follow-up');
  assert.equal(
    receiver.deliveriesFor(urgent).every((d) => d.verified),
    true,
  );

  await late.check('input[name=decision][value=approve]');
  await late.fill('#reason', 'agree: urgent');
  const [response] = await Promise.all([
    late.waitForResponse(`${gw.url}/desk/reviews/${urgent}`),
    late.click('#decide button[type=submit]'),
  ]);
  assert.equal(response.status(), 409);
  await late.waitForSelector('#conflict');
  assert.match((await late.locator('#conflict').textContent()) ?? '', /reviewer chose “amend”/);
  await accessible(late, 'conflict');
  assert.deepEqual(cspErrors, [], 'nothing on the pages is blocked by their own CSP');
  await first.close();
  await second.close();
});

/** Every picture on the page loaded and was drawn: each image decodes (a broken one rejects) and has a width. */
async function picturesDrawn(page: Page, statuses: Map<string, number>): Promise<number> {
  const drawn = await page.locator('main img').evaluateAll(async (imgs) =>
    Promise.all(
      (imgs as HTMLImageElement[]).map((img) =>
        img.decode().then(
          () => ({ src: img.src, width: img.naturalWidth }),
          () => ({ src: img.src, width: 0 }),
        ),
      ),
    ),
  );
  const broken = drawn.filter((d) => d.width === 0).map((d) => `${d.src} (${statuses.get(d.src) ?? 'no response'})`);
  assert.ok(drawn.length > 0, 'pictures on the page');
  assert.deepEqual(broken, [], 'every picture drawn');
  return drawn.length;
}

test('an admin sees the pictures of a model: the shadow comparison and the monitoring, drawn and accessible', async () => {
  // a week of nothing, then this hour: scores (mirrored to the shadow), outcomes and review decisions
  for (let i = 0; i < 24; i++) {
    const requestId = randomUUID();
    const vitals = { ...SICK_VITALS, pulse: 55 + i * 4, respirationRate: 10 + i, spo2: 99 - (i % 8) };
    const res = await gw.predict('deterioration', keys.client, [vitals], { 'x-request-id': requestId });
    assert.equal(res.status, 200, res.text);
    const outcome = await gw.call('POST', '/v1/outcomes', keys.client, {
      requestId,
      outcome: i % 3 === 0 || i > 18,
      observedAt: new Date(Date.now() + 1000).toISOString(),
    });
    assert.equal(outcome.status, 201, outcome.text);
  }
  for (const d of ['approve', 'approve', 'approve', 'amend', 'reject'] as const) {
    gw.gateway.deps.monitoring.recordDecision('deterioration', '1', d);
  }
  await gw.gateway.deps.monitoring.recorder?.flush();
  await waitFor(async () => {
    await gw.gateway.deps.shadow.flush();
    const pairs = await gw.gateway.deps.shadow.scorePairs('deterioration');
    return (pairs.find((p) => p.version === '2')?.pairs.length ?? 0) >= 2;
  }, 'mirrored pairs in the sample');

  const context = await browser.newContext();
  const page = await context.newPage();
  const cspErrors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
  const statuses = new Map<string, number>();
  page.on('response', (r) => {
    if (r.url().includes('/charts/')) statuses.set(r.url(), r.status());
  });
  await signIn(page, keys.admin);
  await page.click('a[href="/desk/models/deterioration"]');
  await page.waitForSelector('h1:has-text("deterioration: shadow comparison")');
  assert.ok((await picturesDrawn(page, statuses)) >= 5, 'agreement, disagreements, latency, scatter, Bland-Altman');
  assert.match((await page.getAttribute('#chart-bland-altman-2', 'alt')) ?? '', /limits of agreement/);
  await accessible(page, 'shadow');
  // one picture on its own, for the README
  await page.locator('section:has(#chart-bland-altman-2) img').screenshot({
    path: new URL('desk-bland-altman.png', SHOTS).pathname,
  });

  await page.click('a[href="/desk/models/deterioration/monitoring"]');
  await page.waitForSelector('h1:has-text("deterioration: monitoring")');
  assert.ok((await picturesDrawn(page, statuses)) >= 5, 'scores, drift, overrides, outcomes, calibration');
  assert.match((await page.getAttribute('#chart-overrides-1', 'alt')) ?? '', /2 of 5 clinician judgements/);
  await accessible(page, 'monitoring');
  assert.deepEqual(cspErrors, [], 'nothing on the pictures pages is blocked by their CSP');
  await context.close();
});
