// The raw RSA output of an import blob (CKM_RSA_X_509, decoded in the proxy where the token cannot do OAEP with
// SHA-256) holds the customer's key material, or the ephemeral AES key that wraps it. It must exist in one place only,
// so that the import path's wipe of it leaves no copy behind (docs/byok.md: buffers are wiped).
import { constants, createPublicKey, publicEncrypt, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HsmConnection } from '../../src/hsm/hsm-connection.js';
import { wrappingPrivateKeyTemplate, wrappingPublicKeyTemplate } from '../../src/import/import-templates.js';
import { RSA_KEY_PAIR_GEN, RSA_RAW } from '../../src/hsm/mechanisms.js';
import { publicKeyDer } from '../../src/import/unwrap.js';
import { openTestHsm } from '../helpers/test-hsm.js';
import { createTestToken, TOKEN_FACTS, type TestToken } from '../helpers/test-token.js';

describe('raw RSA decryption of data from outside', () => {
  let token: TestToken;
  let hsm: HsmConnection;
  beforeAll(async () => {
    token = createTestToken('raw-rsa');
    hsm = await openTestHsm(token);
  });
  afterAll(() => {
    hsm?.close();
    token?.cleanup();
  });

  it('answers in one allocation of its own: wiping the answer wipes the only copy', async (ctx) => {
    // Only a token whose RSA-OAEP lacks SHA-256 (SoftHSM 2.6) takes the raw path; NSS refuses raw RSA with this key.
    if (!hsm.capabilities.rsaX509 || TOKEN_FACTS.oaepSha256) ctx.skip();
    const spec = { label: 'raw-rsa-test', id: randomBytes(8), modulusBits: 2048, use: 'raw-decrypt' as const, token: false };
    const pair = await hsm.generateKeyPair(RSA_KEY_PAIR_GEN, wrappingPublicKeyTemplate(spec), wrappingPrivateKeyTemplate(spec));
    const k = 256;
    const message = Buffer.concat([Buffer.alloc(1), randomBytes(k - 1)]); // below the modulus
    const publicKey = createPublicKey({ key: await publicKeyDer(hsm, pair.publicKey), format: 'der', type: 'spki' });
    const blob = publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, message);

    const em = await hsm.decryptUntrusted(RSA_RAW, pair.privateKey, blob, k);
    expect(em.equals(message)).toBe(true);
    // Not a copy in Node's shared buffer pool, where the bytes a caller wipes would not be the only ones.
    expect(em.byteOffset).toBe(0);
    expect(em.buffer.byteLength).toBe(k);
    em.fill(0);
    expect(new Uint8Array(em.buffer).every((b) => b === 0)).toBe(true);
  });
});
