// Versions behind one external key id: a version another process added after this one cached the key still decrypts,
// and the version in ciphertextMetadata is authenticated.
import { expect, it } from 'vitest';
import { aes256KeyTemplate } from '../../src/hsm/templates.js';
import { legacyVersionId as versionId } from '../helpers/legacy-layout.js';
import { buildGcmAad } from '../../src/xks/aad.js';
import { encodeCiphertextMetadata } from '../../src/xks/ciphertext-metadata.js';
import { useProxyOnToken } from '../helpers/proxy-on-token.js';
import { decryptFields, xksClient } from '../helpers/xks-client.js';

const t = useProxyOnToken({ keys: { foo: { encrypt: true, decrypt: true } } });

it('decrypts with a version added to the token after the key was cached', async () => {
  const xks = xksClient(t.httpUrl);
  const v1 = await xks.encrypt('foo', Buffer.from('under version 1'));
  expect(Buffer.from(v1.json.ciphertextMetadata, 'base64')).toEqual(encodeCiphertextMetadata(1));

  // Version 2 appears in the token (as a rotation by another replica would make it), unknown to the server's cache.
  const v2 = await t.proxy.hsm.generateKey(aes256KeyTemplate({ label: 'foo', id: versionId(2), encrypt: true, decrypt: true, exportable: false }));
  const metadata = encodeCiphertextMetadata(2);
  const out = await t.proxy.hsm.encryptGcm(v2.handle, Buffer.from('under version 2'), buildGcmAad(undefined, metadata));
  const dec = await xks.decrypt('foo', {
    ciphertext: out.ciphertext.toString('base64'),
    initializationVector: out.iv.toString('base64'),
    authenticationTag: out.tag.toString('base64'),
    ciphertextMetadata: metadata.toString('base64'),
  });
  expect(dec.status, dec.text).toBe(200);
  expect(Buffer.from(dec.json.plaintext, 'base64').toString()).toBe('under version 2');

  // The old ciphertext still decrypts, new encrypts use version 2, and a version that does not exist is refused.
  const old = await xks.decrypt('foo', decryptFields(v1.json));
  expect(old.status, old.text).toBe(200);
  const now = await xks.encrypt('foo', Buffer.from('x'));
  expect(Buffer.from(now.json.ciphertextMetadata, 'base64')).toEqual(metadata);
  const v9 = await xks.decrypt('foo', { ...decryptFields(v1.json), ciphertextMetadata: encodeCiphertextMetadata(9).toString('base64') });
  expect(v9.json.errorName).toBe('InvalidCiphertextException');
});

it('checks the key before the metadata: an unknown key with bad metadata is KeyNotFoundException', async () => {
  const xks = xksClient(t.httpUrl);
  const enc = await xks.encrypt('foo', Buffer.from('x'));
  const r = await xks.decrypt('nope', { ...decryptFields(enc.json), ciphertextMetadata: 'AAAA' });
  expect(r.json.errorName).toBe('KeyNotFoundException');
});
