// Bundles the app into dist/ (what `filesync serve --web-app client-examples/web/dist`
// serves): one minified script, one stylesheet, the page. Prints the compressed sizes.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const dist = new URL('./dist/', import.meta.url);
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
await build({
  entryPoints: ['src/main.ts', 'src/style.css'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  conditions: ['source'],
  outdir: 'dist',
  sourcemap: 'linked',
  legalComments: 'none',
  logLevel: 'warning',
});
copyFileSync(new URL('./index.html', import.meta.url), new URL('index.html', dist));
if (!process.argv.includes('--quiet')) {
  for (const name of ['index.html', 'main.js', 'style.css']) {
    const bytes = readFileSync(new URL(name, dist));
    console.log(`${name}: ${bytes.length} bytes, ${gzipSync(bytes).length} gzipped`);
  }
}
