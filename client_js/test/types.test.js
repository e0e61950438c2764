// The TypeScript declarations (types/, the package's `types` entry) are the ones generated from
// the sources' JSDoc, and they type-check what the README shows (types-check/usage.ts) as a
// TypeScript application resolves the package. Skipped only when typescript (a devDependency)
// is not installed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const skip = existsSync(TSC) ? false : 'typescript is not installed (npm install in client_js)';

const tsc = (...args) => execFileSync(process.execPath, [TSC, ...args], { cwd: ROOT, encoding: 'utf8' });

test('types/ is what `npm run types` generates from the sources', { skip }, () => {
  const out = mkdtempSync(path.join(tmpdir(), 'fedlearn-types-'));
  try {
    tsc('-p', 'tsconfig.types.json', '--declarationDir', out);
    const fresh = readdirSync(out).sort();
    assert.deepEqual(readdirSync(path.join(ROOT, 'types')).sort(), fresh);
    for (const name of fresh) {
      const committed = readFileSync(path.join(ROOT, 'types', name), 'utf8');
      assert.equal(committed, readFileSync(path.join(out, name), 'utf8'), `types/${name} is stale: npm run types`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('the declarations type-check a TypeScript user of the package', { skip }, () => {
  tsc('-p', 'tsconfig.check.json'); // throws with the compiler's errors on a failure
});

test('the package points TypeScript at the declarations', () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.types, './types/fedlearn.d.ts');
  assert.equal(pkg.exports['.'].types, pkg.types);
  assert.ok(existsSync(path.join(ROOT, pkg.types)));
  assert.ok(pkg.files.includes('types'));
});
