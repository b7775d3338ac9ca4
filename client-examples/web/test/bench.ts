// The browser app's benchmark: what it ships (compressed bytes), the time to a usable list
// of 1,000 files on loopback (cold: an empty IndexedDB; warm: a reload), and the time from
// a change committed by another user to its row on screen, p50/p99 over 100 changes,
// measured in the browser. `npm run bench -w web -- --write BENCHMARKS.md` records the
// figures (relative paths are from the repository root); `--smoke` runs it tiny.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { brotliCompressSync, gzipSync } from 'node:zlib';

import { startServer } from '@filesync/client/testing';
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const writeTo = args.includes('--write') ? args[args.indexOf('--write') + 1] : undefined;
const FILES = smoke ? 50 : 1000;
const CHANGES = smoke ? 5 : 100;
const ROOT = new URL('../../../../', import.meta.url);
const DIST = fileURLToPath(new URL('../../dist/', import.meta.url));

const lines: string[] = [];
const say = (line: string) => {
  console.log(line);
  lines.push(line);
};

// What the browser downloads.
let gzip = 0;
let brotli = 0;
for (const name of ['index.html', 'main.js', 'style.css']) {
  const bytes = readFileSync(DIST + name);
  gzip += gzipSync(bytes, { level: 9 }).length;
  brotli += brotliCompressSync(bytes).length;
}
say(
  `The app's HTML, JavaScript and CSS: ${(gzip / 1024).toFixed(1)} KiB gzipped, ` +
    `${(brotli / 1024).toFixed(1)} KiB with Brotli (target: under 150 KB).`,
);

const server = await startServer({ FILESYNC_LIMITS__MUTATIONS_PER_SECOND: '0' }, [
  '--web-app',
  DIST,
]);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run'],
});
try {
  const alice = await server.client('alice');
  const bob = await server.client('bob');
  const space = await alice.createSpace('bench');
  await alice.setMember(space.id, 'bob', 'EDITOR');
  for (let i = 0; i < FILES; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, FILES - i) }, (_, j) =>
        bob.upload(new Blob([`file ${i + j}`]), { spaceId: space.id, name: `f${i + j}.txt` }),
      ),
    );
  }

  // Signed in already (the session in sessionStorage), straight to the space.
  const context = await browser.newContext();
  const token = await server.token('alice');
  await context.addInitScript(
    ([key, session]) => sessionStorage.setItem(key!, session!),
    [`filesync.session:${server.url}`, JSON.stringify({ user: 'alice', token })],
  );
  const page = await context.newPage();
  const usable = async (reload: boolean) => {
    const start = Date.now();
    if (reload) await page.reload();
    else await page.goto(`${server.url}/app/#space=${space.id}`);
    await page.locator('body[data-ready="true"]').waitFor({ timeout: 60_000 });
    await page.waitForFunction(
      (n) => document.querySelectorAll('tr[data-file-id]').length >= n,
      FILES,
      { timeout: 60_000 },
    );
    return Date.now() - start;
  };
  const cold = await usable(false);
  const warm = await usable(true);
  say(
    `A usable list of ${FILES} files on loopback (page load, catch-up, READY, rows on screen): ` +
      `${cold} ms from an empty IndexedDB, ${warm} ms on a reload (from the saved cursor).`,
  );

  // Change to row: the page notes when each row appears (MutationObserver, the page's
  // clock); the change's commit time is the server's `updatedAt` (the same machine).
  await page.evaluate(() => {
    const seen: Record<string, number> = {};
    (window as unknown as { seen: typeof seen }).seen = seen;
    new MutationObserver(() => {
      for (const row of document.querySelectorAll('tr[data-name^="lat-"]')) {
        const name = (row as HTMLElement).dataset.name!;
        if (!(name in seen)) seen[name] = Date.now();
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
  const committed: Record<string, number> = {};
  for (let i = 0; i < CHANGES; i++) {
    const name = `lat-${i}.txt`;
    const file = await bob.upload(new Blob([name]), { spaceId: space.id, name });
    committed[name] = Date.parse(file.updatedAt);
    await page.waitForFunction((n) => n in (window as any).seen, name, { timeout: 10_000 });
    await new Promise((r) => setTimeout(r, 20));
  }
  const seen = (await page.evaluate(() => (window as any).seen)) as Record<string, number>;
  const latencies = Object.keys(committed)
    .map((name) => seen[name]! - committed[name]!)
    .sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
  say(
    `A change committed by another user to its row on screen, over ${CHANGES} changes ` +
      `(the list holding ${FILES} files): p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, ` +
      `max ${latencies[latencies.length - 1]} ms.`,
  );
  await alice.close();
  await bob.close();
} finally {
  await browser.close();
  await server.stop();
}

if (writeTo) {
  const path = new URL(writeTo, ROOT);
  const [start, end] = ['<!-- web-app:start -->', '<!-- web-app:end -->'];
  const doc = readFileSync(path, 'utf8');
  const section = `${start}\n${lines.join('\n\n')}\n${end}`;
  const a = doc.indexOf(start);
  const b = doc.indexOf(end);
  writeFileSync(
    path,
    a >= 0 && b > a
      ? doc.slice(0, a) + section + doc.slice(b + end.length)
      : `${doc}\n${section}\n`,
  );
  console.log(`recorded in ${fileURLToPath(path)}`);
}
