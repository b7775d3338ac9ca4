// The browser app end to end in real Chromium (Debian's package; CHROMIUM overrides the
// path), served by the real server (`--web-app dist --dev-sign-in`): two browser contexts
// as two users of one space. Screenshots of each step go to target/web-e2e/.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { documents } from '@filesync/client';
import { startServer, type TestServer } from '@filesync/client/testing';
import { chromium, type Browser, type Page } from 'playwright-core';

const DIST = fileURLToPath(new URL('../../dist', import.meta.url));
const SHOTS = fileURLToPath(new URL('../../../../target/web-e2e', import.meta.url));

let server: TestServer;
let browser: Browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // Files above 8 MiB go up in parts (the smallest part size), so the browser's multipart
  // path is tried with files of a few parts.
  server = await startServer({ FILESYNC_UPLOADS__MULTIPART_THRESHOLD: String(8 << 20) }, [
    '--web-app',
    DIST,
    '--dev-sign-in',
  ]);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function signIn(user: string, viewport = { width: 1200, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/ERR_CONNECTION_REFUSED|WebSocket/.test(m.text())) {
      problems.push(m.text());
    }
  });
  (page as Page & { problems?: string[] }).problems = problems;
  await page.goto(`${server.url}/app/`);
  await page.getByLabel('User id').fill(user);
  await page.getByRole('button', { name: 'Sign in as this user' }).click();
  await page.getByText(`Signed in as ${user}`).waitFor();
  return page;
}

const shot = (page: Page, name: string) => page.screenshot({ path: `${SHOTS}/${name}.png` });
const row = (page: Page, name: string) => page.locator(`tr[data-name="${name}"]`);

test('two users share a space live: uploads, rename, conflict, restore, inspector', async () => {
  const alice = await signIn('alice');
  await alice.getByLabel('New space').fill('team');
  await alice.getByRole('button', { name: 'Create' }).click();
  await alice.getByRole('heading', { name: 'team' }).waitFor();
  await alice.getByRole('tab', { name: 'Members' }).click();
  await alice.getByLabel('Add a member').fill('bob');
  await alice.getByRole('button', { name: 'Add' }).click();
  await alice.getByRole('cell', { name: 'bob', exact: true }).waitFor();
  await shot(alice, '01-members');
  await alice.getByRole('tab', { name: 'Files' }).click();

  const bob = await signIn('bob');
  await bob
    .getByRole('navigation', { name: 'Spaces' })
    .getByRole('button', { name: 'team' })
    .click();
  await bob.locator('body[data-ready="true"]').waitFor();

  // A uploads three files; B sees them appear without a reload.
  await alice.setInputFiles('#choose', [
    { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('first draft') },
    { name: 'b.txt', mimeType: 'text/plain', buffer: Buffer.from('bee') },
    { name: 'c.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(70_000, 7) },
  ]);
  for (const name of ['notes.txt', 'b.txt', 'c.bin']) await row(bob, name).waitFor();
  await shot(alice, '02-alice-uploaded');
  await shot(bob, '03-bob-sees-uploads');

  // B renames one; A sees it.
  await bob.getByRole('button', { name: 'Rename b.txt' }).click();
  await bob.getByLabel('New name').fill('docs/b.txt');
  await bob.getByRole('button', { name: 'Rename', exact: true }).click();
  await alice.getByRole('button', { name: 'Open folder docs' }).click();
  await row(alice, 'docs/b.txt').waitFor();
  await shot(alice, '04-alice-sees-rename');
  await alice
    .getByRole('navigation', { name: 'Folder' })
    .getByRole('button', { name: 'team' })
    .click();

  // Both edit notes.txt from version 1; the second to save gets the choice.
  await alice.getByRole('button', { name: 'Edit notes.txt' }).click();
  await bob.getByRole('button', { name: 'Edit notes.txt' }).click();
  await alice.locator('#editor').fill('alice was here');
  await bob.locator('#editor').fill('bob was here');
  await alice.getByRole('button', { name: 'Save' }).click();
  await row(bob, 'notes.txt').and(bob.locator('[data-version="2"]')).waitFor();
  await bob.getByRole('button', { name: 'Save' }).click();
  await bob.getByRole('heading', { name: 'Someone changed this file meanwhile' }).waitFor();
  await shot(bob, '05-bob-conflict-choice');
  await bob.getByRole('button', { name: 'Keep both' }).click();
  const copy = alice.locator('tr[data-name^="notes (conflict bob "]');
  await copy.waitFor();
  await shot(alice, '06-alice-sees-conflict-copy');
  // Both versions kept: the original holds alice's edit, the copy bob's.
  const aliceApi = await server.client('alice');
  const files = await aliceApi.files((await aliceApi.spaces())[0]!.id);
  const notes = files.find((f) => f.name === 'notes.txt')!;
  const copied = files.find((f) => f.name.startsWith('notes (conflict bob '))!;
  assert.equal(await (await aliceApi.download(notes.id)).text(), 'alice was here');
  assert.equal(await (await aliceApi.download(copied.id)).text(), 'bob was here');

  // A restores version 1 of notes.txt.
  await alice.getByRole('button', { name: 'History notes.txt' }).click();
  await alice.getByRole('button', { name: 'Restore version 1' }).click();
  await row(alice, 'notes.txt').and(alice.locator('[data-version="3"]')).waitFor();
  await row(bob, 'notes.txt').and(bob.locator('[data-version="3"]')).waitFor();
  assert.equal(await (await aliceApi.download(notes.id)).text(), 'first draft');
  await shot(alice, '07-restored');

  // Again both edit; this time the second overwrites, on the version now current.
  await row(bob, 'notes.txt').and(bob.locator('[data-version="3"]')).waitFor();
  await alice.getByRole('button', { name: 'Edit notes.txt' }).click();
  await bob.getByRole('button', { name: 'Edit notes.txt' }).click();
  await alice.locator('#editor').fill('alice again');
  await bob.locator('#editor').fill('bob wins');
  await alice.getByRole('button', { name: 'Save' }).click();
  await row(bob, 'notes.txt').and(bob.locator('[data-version="4"]')).waitFor();
  await bob.getByRole('button', { name: 'Save' }).click();
  await bob.getByRole('button', { name: 'Overwrite version 4' }).click();
  await row(alice, 'notes.txt').and(alice.locator('[data-version="5"]')).waitFor();
  assert.equal(await (await aliceApi.download(notes.id)).text(), 'bob wins');
  await shot(alice, '07b-overwritten');

  // The inspector: a version PENDING (begun, bytes not yet sent), then COMMITTED.
  await alice.getByRole('tab', { name: 'Inspector' }).click();
  const spaceId = notes.spaceId;
  const bytes = new TextEncoder().encode('inspected');
  const digest = await import('@filesync/client').then((m) => m.hashBlob(new Blob([bytes])));
  const { beginUpload: ticket } = await aliceApi.request(documents.BEGIN_UPLOAD, {
    input: { spaceId, name: 'inspected.txt', size: bytes.length, sha256: digest },
  });
  const inspected = alice.locator(`tr[data-upload-id="${ticket.uploadId}"]`);
  await inspected.and(alice.locator('[data-state="PENDING"]')).waitFor();
  await shot(alice, '08-inspector-pending');
  const put = await fetch(ticket.url, {
    method: 'PUT',
    headers: Object.fromEntries(ticket.headers.map((h) => [h.name, h.value])),
    body: bytes,
  });
  assert.ok(put.ok);
  await aliceApi.request(documents.COMMIT_UPLOAD, {
    uploadId: ticket.uploadId,
    uploadToken: ticket.uploadToken,
  });
  await inspected.and(alice.locator('[data-state="COMMITTED"]')).waitFor();
  await shot(alice, '09-inspector-committed');
  // B is an editor: no inspector tab.
  assert.equal(await bob.getByRole('tab', { name: 'Inspector' }).count(), 0);

  // The server goes away: the offline banner; it comes back: the list catches up with
  // what happened meanwhile, without a reload.
  await alice.getByRole('tab', { name: 'Files' }).click();
  await server.kill();
  await bob.getByText('Offline: changes will appear').waitFor();
  await shot(bob, '10-offline');
  await server.restart();
  const again = await server.client('alice');
  await again.upload(new Blob(['while you were away']), { spaceId, name: 'later.txt' });
  await row(bob, 'later.txt').waitFor({ timeout: 30_000 });
  await bob.locator('body[data-live="live"]').waitFor();
  assert.equal(await bob.getByText('Offline: changes will appear').isVisible(), false);
  await shot(bob, '11-back-online');

  for (const page of [alice, bob]) {
    assert.deepEqual((page as Page & { problems?: string[] }).problems, []);
  }
  await aliceApi.close();
  await again.close();
});

test('usable by keyboard and screen readers, and on a phone-sized screen', async () => {
  const page = await signIn('carol', { width: 375, height: 740 });
  await page.getByLabel('New space').fill('phone');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'phone' }).waitFor();
  await page.setInputFiles('#choose', [
    {
      name: 'a-rather-long-file-name-for-a-small-screen.txt',
      mimeType: 'text/plain',
      buffer: Buffer.from('x'),
    },
  ]);
  await row(page, 'a-rather-long-file-name-for-a-small-screen.txt').waitFor();
  // Nothing wider than the screen.
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  // Every control has an accessible name; every field a label.
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll('button, input, select, textarea')]
      .filter((el) => {
        const e = el as HTMLInputElement;
        if (e.type === 'file') return !document.querySelector(`label[for="${e.id}"]`);
        const label = e.labels?.length || e.getAttribute('aria-label');
        return !label && !(el.textContent ?? '').trim();
      })
      .map((el) => el.outerHTML.slice(0, 80)),
  );
  assert.deepEqual(unnamed, []);
  // Keyboard: Tab reaches the row's actions, Enter opens the history dialog, Escape closes.
  const history = page.getByRole('button', { name: /^History a-rather-long/ });
  await history.focus();
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: /^History of/ }).waitFor();
  await shot(page, '12-phone-history');
  await page.keyboard.press('Escape');
  await page.getByRole('heading', { name: /^History of/ }).waitFor({ state: 'hidden' });
  await shot(page, '13-phone');
});

test('many files dropped at once; a slow upload cancelled publishes nothing', async () => {
  const page = await signIn('dora');
  await page.getByLabel('New space').fill('drops');
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('heading', { name: 'drops' }).waitFor();
  // A real drop event carrying five files.
  const transfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    for (let i = 0; i < 5; i++) dt.items.add(new File([`dropped ${i}`], `drop-${i}.txt`));
    return dt;
  });
  await page.locator('.dropzone').dispatchEvent('drop', { dataTransfer: transfer });
  for (let i = 0; i < 5; i++) await row(page, `drop-${i}.txt`).waitFor();

  // Slow the network so that an upload is still sending when Cancel is pressed.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: 200 * 1024,
  });
  await page.setInputFiles('#choose', [
    { name: 'slow.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(3 << 20, 1) },
  ]);
  const progress = page.getByRole('progressbar', { name: 'Upload of slow.bin' });
  await page.waitForFunction(() => {
    const bar = document.querySelector('li[data-upload="slow.bin"] .phase');
    return bar?.textContent?.startsWith('sending') && !bar.textContent.endsWith(' 0%');
  });
  await progress.waitFor();
  await shot(page, '14-slow-upload');
  await page.getByRole('button', { name: 'Cancel upload of slow.bin' }).click();
  await page.getByText('Cancelled slow.bin').waitFor();
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: -1,
  });
  // Nothing published; the inspector shows the upload abandoned, its object gone.
  assert.equal(await row(page, 'slow.bin').count(), 0);
  await page.getByRole('tab', { name: 'Inspector' }).click();
  await page.locator('tr[data-name="slow.bin"][data-state="ABANDONED"]').waitFor();
  assert.equal(await page.locator('tr[data-name="slow.bin"] td').nth(3).textContent(), 'none');
  await shot(page, '15-cancelled-in-inspector');
});

test('a large file goes up in parts; after a reload, dropping it again sends only what is missing', async () => {
  const page = await signIn('erin');
  await page.getByLabel('New space').fill('large');
  await page.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('heading', { name: 'large' }).waitFor();
  await page.locator('body[data-ready="true"]').waitFor();
  let parts = 0;
  page.on('requestfinished', (request) => {
    if (request.url().includes('/part/')) parts++;
  });
  // Three parts (8, 8 and 4 MiB), sent by the browser's XMLHttpRequest.
  const video = Buffer.alloc(20 << 20);
  for (let i = 0; i < video.length; i += 4096) video[i] = (i / 4096) & 0xff;
  await page.setInputFiles('#choose', [
    { name: 'video.bin', mimeType: 'application/octet-stream', buffer: video },
  ]);
  await row(page, 'video.bin').waitFor();
  assert.equal(parts, 3);

  // A slow link: six parts, four in flight at a time; once one has landed the page is
  // reloaded (the last two have not started).
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: 12 << 20,
  });
  const backup = Buffer.alloc(44 << 20);
  for (let i = 0; i < backup.length; i += 4096) backup[i] = ((i / 4096) * 7) & 0xff;
  parts = 0;
  await page.setInputFiles('#choose', [
    { name: 'backup.img', mimeType: 'application/octet-stream', buffer: backup },
  ]);
  const stored: string[] = [];
  const landed = new Promise<void>((resolve) => {
    page.on('requestfinished', async (request) => {
      if (!request.url().includes('/part/')) return;
      if ((await request.response())?.status() === 200) stored.push(request.url());
      if (stored.length === 1) resolve();
    });
  });
  await landed;
  await page.reload();
  await page.locator('body[data-ready="true"]').waitFor();
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: -1,
  });
  let resent = 0;
  page.on('requestfinished', (request) => {
    if (request.url().includes('/part/')) resent++;
  });
  await page.setInputFiles('#choose', [
    { name: 'backup.img', mimeType: 'application/octet-stream', buffer: backup },
  ]);
  await row(page, 'backup.img').waitFor();
  assert.ok(resent >= 1 && resent < 6, `${resent} parts sent after the reload, of 6`);
  assert.match((await row(page, 'backup.img').textContent()) ?? '', /44 MiB/);
  await shot(page, '16-resumed-after-reload');
});
