// GraphiQL in Chromium, offline: the page renders from the server's own assets, its
// documentation explorer shows the schema (the introspection query went through), and
// typing in the editor offers completions from it. Prints one JSON line with what it
// saw; exits non-zero on any failure. Run by tests/api/graphiql.rs.
import { chromium } from 'playwright-core';

const [base, token, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const outcome = { requests: [], failed: [], console: [] };
try {
  const page = await browser.newPage();
  page.on('request', (r) => outcome.requests.push(new URL(r.url()).host));
  page.on('requestfailed', (r) => outcome.failed.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') outcome.console.push(m.text()); });
  await page.goto(`${base}/graphiql#token=${token}`);
  await page.waitForSelector('.graphiql-container', { timeout: 20000 });
  // The documentation explorer: the schema came through introspection.
  await page.getByRole('button', { name: /documentation explorer/i }).click();
  await page.getByText('Query', { exact: true }).first().waitFor({ timeout: 20000 });
  outcome.docs = true;
  await page.screenshot({ path: `${shots}/graphiql-docs.png` });
  // Autocompletion: type in the query editor, and the schema's fields are offered.
  const editor = page.locator('.graphiql-query-editor .CodeMirror').first();
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.type('{ spa');
  await page.locator('.CodeMirror-hint').first().waitFor({ timeout: 20000 });
  outcome.hints = await page.locator('.CodeMirror-hint').allInnerTexts();
  await page.screenshot({ path: `${shots}/graphiql-completion.png` });
  // And a query runs, with the token from the page's fragment.
  await page.keyboard.press('Escape');
  await page.keyboard.press('Control+A');
  await page.keyboard.type('{ me { id } }');
  await page.keyboard.press('Control+Enter');
  await page.getByText('"id": "alice"').waitFor({ timeout: 20000 });
  outcome.ran = true;
  await page.screenshot({ path: `${shots}/graphiql-result.png` });
} catch (e) {
  outcome.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(outcome));
process.exit(outcome.error ? 1 : 0);
