// Report the client's size as a browser downloads it: bundled, minified, gzipped.
// Uses esbuild (a devDependency: `npm install`), else `npx --yes esbuild`; without either, an
// approximate minifier (comments and indentation stripped from the concatenated modules,
// which overestimates the real minified size) so the check still runs offline.
// Exits 1 when the minified+gzipped module exceeds the budget: 12 KB, raised deliberately from
// 10 KB for partial bases (issue 18: +1.4 KB, saving 55 MB per session at a million items) beside
// rank's exploration policies (issue 15); the two together measured 11.2 KB.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET = 12 * 1024;
const src = fileURLToPath(new URL('../src/', import.meta.url));
const entry = `${src}fedlearn.js`;

/** @returns {Promise<{code: string, how: string}>} */
async function minified() {
  const options = { entryPoints: [entry], bundle: true, minify: true, format: 'esm', target: 'es2022', write: false };
  try {
    const esbuild = await import('esbuild');
    const out = await esbuild.build(options);
    return { code: out.outputFiles[0].text, how: `esbuild ${esbuild.version}` };
  } catch {
    // Not installed locally: try npx, then the approximation.
  }
  try {
    const code = execFileSync(
      'npx',
      ['--yes', 'esbuild', entry, '--bundle', '--minify', '--format=esm', '--target=es2022'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
    );
    return { code, how: 'npx esbuild' };
  } catch {
    const code = readdirSync(src)
      .filter((f) => f.endsWith('.js'))
      .map((f) => readFileSync(`${src}${f}`, 'utf8'))
      .join('\n')
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .replace(/^\s*\/\/.*$/gm, '')
      .replace(/^\s+/gm, '')
      .replace(/\n+/g, '\n');
    return { code, how: 'approximate (comments and indentation stripped; overestimates)' };
  }
}

const raw = readdirSync(src).reduce((n, f) => n + readFileSync(`${src}${f}`).length, 0);
const { code, how } = await minified();
const gz = gzipSync(Buffer.from(code), { level: 9 }).length;
const kb = (n) => `${(n / 1024).toFixed(2)} KB`;
console.log(`source          ${kb(raw)} (${raw} bytes, ${readdirSync(src).length} modules)`);
console.log(`minified        ${kb(code.length)} (${code.length} bytes) by ${how}`);
console.log(`minified+gzip   ${kb(gz)} (${gz} bytes); budget ${kb(BUDGET)}`);
if (gz > BUDGET) {
  console.error(`size check failed: ${gz} bytes > ${BUDGET}: trim src/ or raise the budget deliberately`);
  process.exit(1);
}
