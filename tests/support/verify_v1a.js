// Verifies Standard Webhooks `v1a` (Ed25519) signatures with Node's own crypto (OpenSSL), independently of
// hookfleet's Python signer. The lines between the README markers are the receiver code README.md shows
// (tests/unit/test_readme_receiver_code.py checks that they are the same).
//
// stdin: {"public_keys": ["whpk_..."], "headers": {lower-case name: value}, "body_b64": "...", "now": unix s}
// stdout: {"entries": number of v1a entries, "verified": [per public key: verifyV1a's answer],
//          "matches": [per public key: the indexes of the v1a entries its key verifies]}
'use strict';
const crypto = require('node:crypto');

// README begin
function publicKeyOf(whpk) {
  const x = Buffer.from(whpk.replace(/^whpk_/, ''), 'base64').toString('base64url');
  return crypto.createPublicKey({ format: 'jwk', key: { kty: 'OKP', crv: 'Ed25519', x } });
}

function verifyV1a(publicKey, headers, rawBody, now = Date.now() / 1000) {
  const timestamp = Number(headers['webhook-timestamp']);
  if (!(Math.abs(now - timestamp) <= 300)) return false; // refuse replays of old deliveries
  const signed = Buffer.concat([Buffer.from(`${headers['webhook-id']}.${headers['webhook-timestamp']}.`), rawBody]);
  return String(headers['webhook-signature'] ?? '')
    .split(' ')
    .filter((entry) => entry.startsWith('v1a,'))
    .some((entry) => crypto.verify(null, signed, publicKey, Buffer.from(entry.slice(4), 'base64')));
}
// README end

const input = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const body = Buffer.from(input.body_b64, 'base64');
const headers = input.headers;
const signed = Buffer.concat([Buffer.from(`${headers['webhook-id']}.${headers['webhook-timestamp']}.`), body]);
const entries = String(headers['webhook-signature'] ?? '').split(' ').filter((e) => e.startsWith('v1a,'));
const keys = input.public_keys.map(publicKeyOf);
process.stdout.write(
  JSON.stringify({
    entries: entries.length,
    verified: keys.map((key) => verifyV1a(key, headers, body, input.now)),
    matches: keys.map((key) =>
      entries.flatMap((e, i) => (crypto.verify(null, signed, key, Buffer.from(e.slice(4), 'base64')) ? [i] : [])),
    ),
  }),
);
