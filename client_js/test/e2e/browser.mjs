// What the browser scripts share: which Chromium, and its flags (loopback only, as root in CI).
// `node --test` loads every file under test/: this one only exports.

import { existsSync } from 'node:fs';

// Debian's `chromium` is what CI installs; the headless shell is a lighter stand-in.
export const BROWSERS = ['/usr/bin/chromium', '/usr/bin/chromium-headless-shell'];
export const ARGS = [
  '--no-sandbox', // CI runs as root, where Chromium's sandbox refuses to start
  '--disable-gpu',
  '--disable-background-networking', // loopback only: nothing of Chromium's own phones home
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export function browserPath() {
  const wanted = process.env.FEDLEARN_CHROMIUM;
  if (wanted) return wanted;
  const found = BROWSERS.find((p) => existsSync(p));
  if (!found) throw new Error(`no Chromium at ${BROWSERS.join(' or ')}: apt-get install chromium`);
  return found;
}
