// xwing_noble.mjs: the independent side of the MLKEM768-X25519 interoperation test, with
// @noble/post-quantum's ml_kem768_x25519 (X-Wing), installed pinned by test_xwing_noble.sh.
//
//   node xwing_noble.mjs NPM_PREFIX gen FILE N   N lines "seed pk ct ss eseed" from random
//                                                seeds and encapsulation randomness, for C to check
//   node xwing_noble.mjs NPM_PREFIX check FILE   checks C's lines "seed pk ct ss": noble's
//                                                keygen(seed) and decapsulate(ct) must agree
// Exits 0 when everything matched, 1 on a mismatch, 2 on a usage or load error.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [prefix, mode, file, count] = process.argv.slice(2);
if (!prefix || !file || (mode !== 'gen' && mode !== 'check')) {
  console.error('usage: xwing_noble.mjs NPM_PREFIX gen FILE N | check FILE');
  process.exit(2);
}
const mod = join(prefix, 'node_modules', '@noble', 'post-quantum', 'hybrid.js');
const { ml_kem768_x25519: kem } = await import(pathToFileURL(mod).href);
const hex = (b) => Buffer.from(b).toString('hex');
const eq = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

if (mode === 'gen') {
  const lines = [];
  for (let i = 0; i < Number(count || 16); i++) {
    const seed = randomBytes(32);
    const eseed = randomBytes(64);
    const { publicKey, secretKey } = kem.keygen(seed);
    if (!eq(secretKey, seed)) {
      console.error('noble: secretKey is not the 32-byte seed');
      process.exit(1);
    }
    const { cipherText, sharedSecret } = kem.encapsulate(publicKey, eseed);
    lines.push([seed, publicKey, cipherText, sharedSecret, eseed].map(hex).join(' '));
  }
  writeFileSync(file, lines.join('\n') + '\n');
  process.exit(0);
}

let n = 0;
let bad = 0;
for (const line of readFileSync(file, 'utf8').split('\n')) {
  if (line.trim() === '') continue;
  const [seed, pk, ct, ss] = line.trim().split(/\s+/).map((h) => Buffer.from(h, 'hex'));
  n++;
  const { publicKey, secretKey } = kem.keygen(seed);
  if (!eq(publicKey, pk)) {
    console.log(`# line ${n}: noble's keygen(seed) differs from the C public key`);
    bad++;
  }
  if (!eq(kem.decapsulate(ct, secretKey), ss)) {
    console.log(`# line ${n}: noble's decapsulate(ct) differs from the C shared secret`);
    bad++;
  }
}
console.log(`# ${n} C encapsulations checked by noble, ${bad} mismatches`);
process.exit(n > 0 && bad === 0 ? 0 : 1);
