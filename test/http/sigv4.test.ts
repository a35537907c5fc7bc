// Unit tests of the server's SigV4 verifier (src/http/sigv4.ts). Every request here is signed by AWS's own
// implementation (@smithy/signature-v4), never by the verifier's code.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { verifySigV4, XKS_SERVICE, type SigV4Request } from '../../src/http/sigv4.js';
import { awsSign, awsSigner } from '../helpers/aws-sigv4.js';

const AKID = 'BETWEEN2TENAND3TENCHARACTERS';
const SECRET = 'PleaseReplaceThisWithSomeSecretOfLength43To64';
const AKID2 = 'ROTATEDCREDENTIAL234567ABC';
const SECRET2 = 'AnotherSecretForRotation0123456789abcdefABCDEF';
const REGION = 'us-east-1';
const PATH = '/example/uri/path/prefix/kms/xks/v1/keys/foo/encrypt';
const BODY = JSON.stringify({ requestMetadata: { kmsRequestId: 'r1', kmsOperation: 'Encrypt' }, plaintext: 'SGVsbG8=', encryptionAlgorithm: 'AES_GCM' }, null, 2);
const T0 = new Date('2024-05-01T12:00:00Z');

const creds = new Map([
  [AKID, SECRET],
  [AKID2, SECRET2],
]);

interface SignOpts {
  host?: string;
  headers?: Record<string, string>;
  body?: string;
  path?: string;
  date?: Date;
  accessKeyId?: string;
  secret?: string;
  region?: string;
  service?: string;
  /** Headers present on the request but left out of SignedHeaders. */
  unsignable?: string[];
  /** Let smithy add and sign x-amz-content-sha256 (its default). */
  applyChecksum?: boolean;
}

const credential = (o: SignOpts) => ({
  accessKeyId: o.accessKeyId ?? AKID,
  secret: o.secret ?? SECRET,
  region: o.region ?? REGION,
  service: o.service ?? XKS_SERVICE,
  applyChecksum: o.applyChecksum ?? false,
});

/** Node-style rawHeaders from a header object, with the names in the case the client chose. */
function raw(headers: Record<string, string>, rename: Record<string, string> = {}): string[] {
  return Object.entries(headers).flatMap(([k, v]) => [rename[k] ?? k, v]);
}

async function sign(o: SignOpts = {}): Promise<{ headers: Record<string, string>; req: SigV4Request; auth: string }> {
  const host = o.host ?? 'xks.example.com';
  const body = o.body ?? BODY;
  const headers: Record<string, string> = { host, ...o.headers };
  const h = await awsSign(
    { method: 'POST', url: new URL(`https://${host.split(':')[0]!}`), path: o.path ?? PATH, headers, body },
    { ...credential(o), signingDate: o.date ?? T0, ...(o.unsignable ? { unsignableHeaders: o.unsignable } : {}) },
  );
  return { headers: h, auth: h.authorization!, req: { method: 'POST', path: o.path ?? PATH, query: '', rawHeaders: raw(h), body: Buffer.from(body) } };
}

const verify = (req: SigV4Request, over: { now?: number; region?: string; service?: string } = {}) =>
  verifySigV4(req, { region: over.region ?? REGION, service: over.service ?? XKS_SERVICE, secretFor: (id) => creds.get(id), now: over.now ?? T0.getTime() });

const signedHeadersOf = (auth: string) => /SignedHeaders=([^,]+)/.exec(auth)![1];

/** Deterministic PRNG (mulberry32) so the fuzz cases are the same on every run. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('valid signatures', () => {
  it('accepts KMS style: SignedHeaders=host;x-amz-date', async () => {
    const s = await sign();
    expect(signedHeadersOf(s.auth)).toBe('host;x-amz-date');
    expect(verify(s.req)).toEqual({ ok: true, accessKeyId: AKID });
  });

  it('accepts curl style: SignedHeaders=content-type;host;x-amz-date', async () => {
    const s = await sign({ headers: { 'content-type': 'application/json' } });
    expect(signedHeadersOf(s.auth)).toBe('content-type;host;x-amz-date');
    expect(verify(s.req)).toEqual({ ok: true, accessKeyId: AKID });
  });

  it('accepts a request with an unsigned extra header (only SignedHeaders are verified)', async () => {
    const s = await sign({ headers: { 'content-type': 'application/json', 'x-forwarded-for': '10.0.0.1' }, unsignable: ['content-type', 'x-forwarded-for'] });
    expect(signedHeadersOf(s.auth)).toBe('host;x-amz-date');
    expect(verify(s.req).ok).toBe(true);
  });

  it('accepts a signed x-amz-content-sha256 (smithy default)', async () => {
    const s = await sign({ applyChecksum: true, headers: { 'content-type': 'application/json' } });
    expect(signedHeadersOf(s.auth)).toBe('content-type;host;x-amz-content-sha256;x-amz-date');
    expect(verify(s.req).ok).toBe(true);
  });

  it('accepts a Host with a port, as curl sends it', async () => {
    const s = await sign({ host: '127.0.0.1:8443', headers: { 'content-type': 'application/json' } });
    expect(s.headers.host).toBe('127.0.0.1:8443');
    expect(verify(s.req).ok).toBe(true);
  });

  it('accepts header names in any case (Node keeps the client case in rawHeaders)', async () => {
    const s = await sign({ headers: { 'content-type': 'application/json' } });
    const req = { ...s.req, rawHeaders: raw(s.headers, { host: 'Host', 'x-amz-date': 'X-Amz-Date', authorization: 'Authorization', 'content-type': 'Content-Type' }) };
    expect(verify(req).ok).toBe(true);
  });

  it('accepts the second credential of a rotation', async () => {
    const s = await sign({ accessKeyId: AKID2, secret: SECRET2 });
    expect(verify(s.req)).toEqual({ ok: true, accessKeyId: AKID2 });
  });

  it('accepts an empty body and a 20 KB body', async () => {
    for (const body of ['', 'x'.repeat(20_000)]) {
      const s = await sign({ body });
      expect(verify(s.req).ok).toBe(true);
    }
  });

  it('accepts clock skew up to 5 minutes either way', async () => {
    const s = await sign();
    expect(verify(s.req, { now: T0.getTime() + 299_000 }).ok).toBe(true);
    expect(verify(s.req, { now: T0.getTime() - 299_000 }).ok).toBe(true);
  });
});

describe('rejected signatures', () => {
  it('rejects a wrong secret', async () => {
    const s = await sign({ secret: 'InvalidPleaseReplaceThisWithSomeSecretOfLength43' });
    expect(verify(s.req)).toEqual({ ok: false, reason: 'signature mismatch' });
  });

  it("rejects the second credential's id with the first credential's secret", async () => {
    const s = await sign({ accessKeyId: AKID2, secret: SECRET });
    expect(verify(s.req).ok).toBe(false);
  });

  it('rejects an unknown access key id', async () => {
    const s = await sign({ accessKeyId: 'INVALIDBETWEEN2TENAND3TEN' });
    expect(verify(s.req)).toEqual({ ok: false, reason: 'unknown access key id' });
  });

  it('rejects a signature for another region or service', async () => {
    for (const o of [{ region: 'eu-west-1' }, { service: 'kms' }]) {
      const s = await sign(o);
      const r = verify(s.req);
      expect(r.ok, JSON.stringify(o)).toBe(false);
    }
    // And the verifier expecting another region rejects a signature that is otherwise good.
    const s = await sign();
    expect(verify(s.req, { region: 'eu-west-1' }).ok).toBe(false);
    expect(verify(s.req, { service: 'kms' }).ok).toBe(false);
  });

  it('rejects a signature more than 5 minutes old or ahead', async () => {
    const s = await sign();
    expect(verify(s.req, { now: T0.getTime() + 301_000 }).ok).toBe(false);
    expect(verify(s.req, { now: T0.getTime() - 301_000 }).ok).toBe(false);
    expect(verify(s.req, { now: T0.getTime() + 86_400_000 }).ok).toBe(false);
    // Signed 6 minutes ago / 6 minutes ahead, verified now.
    for (const d of [-360_000, 360_000]) {
      const r = verify((await sign({ date: new Date(T0.getTime() + d) })).req);
      expect(r.ok).toBe(false);
      expect(r.ok ? '' : r.reason).toMatch(/5-minute/);
    }
  });

  it('rejects a credential scope date that differs from X-Amz-Date, even when correctly signed', async () => {
    // Build the signature with smithy's own canonicalisation, over X-Amz-Date 20240502T000100Z but with the
    // scope (and signing key) of 20240501: a signature smithy's sign() would never produce, yet internally consistent.
    const s = awsSigner(credential({})) as any;
    const mk = async (longDate: string, shortDate: string) => {
      const headers = { host: 'xks.example.com', 'x-amz-date': longDate };
      const request = { method: 'POST', protocol: 'https:', hostname: 'xks.example.com', path: PATH, headers, body: BODY, query: {} };
      const payloadHash = createHash('sha256').update(BODY).digest('hex');
      const scope = `${shortDate}/${REGION}/${XKS_SERVICE}/aws4_request`;
      const key = s.getSigningKey({ accessKeyId: AKID, secretAccessKey: SECRET }, REGION, shortDate, XKS_SERVICE);
      const sig = await s.getSignature(longDate, scope, key, s.createCanonicalRequest(request, headers, payloadHash));
      const auth = `AWS4-HMAC-SHA256 Credential=${AKID}/${scope}, SignedHeaders=host;x-amz-date, Signature=${sig}`;
      return { method: 'POST', path: PATH, query: '', rawHeaders: raw({ ...headers, authorization: auth }), body: Buffer.from(BODY) };
    };
    const now = Date.UTC(2024, 4, 2, 0, 1, 0);
    // Control: the same construction with matching dates verifies.
    expect(verify(await mk('20240502T000100Z', '20240502'), { now }).ok).toBe(true);
    const r = verify(await mk('20240502T000100Z', '20240501'), { now });
    expect(r).toEqual({ ok: false, reason: 'credential scope date does not match X-Amz-Date' });
  });

  it('rejects a body changed after signing', async () => {
    const s = await sign();
    expect(verify({ ...s.req, body: Buffer.from(BODY.replace('SGVsbG8=', 'SGVsbG9=')) }).ok).toBe(false);
    expect(verify({ ...s.req, body: Buffer.from(BODY + '\n') }).ok).toBe(false);
    expect(verify({ ...s.req, body: Buffer.from(JSON.stringify(JSON.parse(BODY))) }).ok).toBe(false); // re-serialised
  });

  it('rejects a changed path, method or signed header value', async () => {
    const s = await sign({ headers: { 'content-type': 'application/json' } });
    expect(verify({ ...s.req, path: PATH.replace('/encrypt', '/decrypt') }).ok).toBe(false);
    expect(verify({ ...s.req, path: PATH.replace('/foo/', '/bar/') }).ok).toBe(false);
    expect(verify({ ...s.req, method: 'PUT' }).ok).toBe(false);
    expect(verify({ ...s.req, query: 'a=b' }).ok).toBe(false);
    expect(verify({ ...s.req, rawHeaders: raw({ ...s.headers, 'content-type': 'text/plain' }) }).ok).toBe(false);
    expect(verify({ ...s.req, rawHeaders: raw({ ...s.headers, host: 'evil.example.com' }) }).ok).toBe(false);
  });

  it('rejects a request missing a header that SignedHeaders lists', async () => {
    const s = await sign({ headers: { 'content-type': 'application/json' } });
    const { 'content-type': _, ...rest } = s.headers;
    expect(verify({ ...s.req, rawHeaders: raw(rest) })).toEqual({ ok: false, reason: 'signed header content-type is missing' });
    const { host: __, ...noHost } = s.headers;
    expect(verify({ ...s.req, rawHeaders: raw(noHost) }).ok).toBe(false);
    const { 'x-amz-date': ___, ...noDate } = s.headers;
    expect(verify({ ...s.req, rawHeaders: raw(noDate) }).ok).toBe(false);
  });

  it('rejects a duplicated Authorization header, even when both copies are identical and valid', async () => {
    const s = await sign();
    expect(verify(s.req).ok).toBe(true);
    expect(verify({ ...s.req, rawHeaders: [...s.req.rawHeaders, 'Authorization', s.auth] }).ok).toBe(false);
    const other = await sign({ accessKeyId: AKID2, secret: SECRET2 });
    expect(verify({ ...s.req, rawHeaders: [...s.req.rawHeaders, 'authorization', other.auth] }).ok).toBe(false);
  });

  it('rejects a duplicated X-Amz-Date header', async () => {
    const s = await sign();
    expect(verify({ ...s.req, rawHeaders: [...s.req.rawHeaders, 'x-amz-date', s.headers['x-amz-date']!] }).ok).toBe(false);
  });

  it('rejects a request without Authorization', async () => {
    const s = await sign();
    const { authorization: _, ...rest } = s.headers;
    expect(verify({ ...s.req, rawHeaders: raw(rest) }).ok).toBe(false);
  });

  it('rejects SignedHeaders that do not include host, although the signature itself is right', async () => {
    const s = await sign({ unsignable: ['host'] });
    expect(signedHeadersOf(s.auth)).toBe('x-amz-date');
    expect(verify(s.req)).toEqual({ ok: false, reason: 'SignedHeaders must include host' });
  });

  it('rejects SignedHeaders without x-amz-date', async () => {
    const s = await sign({ unsignable: ['x-amz-date'] });
    expect(signedHeadersOf(s.auth)).toBe('host');
    expect(verify(s.req).ok).toBe(false);
  });

  it('rejects an x-amz-content-sha256 that does not match the body', async () => {
    const s = await sign(); // not signed: the verifier must still check it against the body
    const good = createHash('sha256').update(BODY).digest('hex');
    expect(verify({ ...s.req, rawHeaders: [...s.req.rawHeaders, 'x-amz-content-sha256', good] }).ok).toBe(true);
    const bad = createHash('sha256').update('other').digest('hex');
    expect(verify({ ...s.req, rawHeaders: [...s.req.rawHeaders, 'x-amz-content-sha256', bad] })).toEqual({
      ok: false,
      reason: 'X-Amz-Content-Sha256 does not match the body',
    });
    // Signed with the right hash, then the body changes: fails on the hash.
    const t = await sign({ applyChecksum: true });
    expect(verify({ ...t.req, body: Buffer.from('{}') }).ok).toBe(false);
  });
});

describe('malformed Authorization values', () => {
  const verifyAuth = (s: { headers: Record<string, string>; req: SigV4Request }, auth: string) =>
    verify({ ...s.req, rawHeaders: raw({ ...s.headers, authorization: auth }) });

  it('tolerates spacing variants around the commas', async () => {
    const s = await sign();
    expect(verifyAuth(s, s.auth.replaceAll(', ', ',')).ok).toBe(true);
    expect(verifyAuth(s, s.auth.replaceAll(', ', ' ,  ')).ok).toBe(true);
    expect(verifyAuth(s, `  ${s.auth}  `).ok).toBe(true);
  });

  it('rejects hand-made malformed values without throwing', async () => {
    const s = await sign();
    const a = s.auth;
    const cases = [
      '',
      ' ',
      'AWS4-HMAC-SHA256',
      'AWS4-HMAC-SHA256 ',
      'Bearer abc',
      'Basic QUtJRDpzZWNyZXQ=',
      a.replace('AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA512'),
      a.replace('AWS4-HMAC-SHA256', 'aws4-hmac-sha256'),
      a.replace('Credential=', 'Credentials='),
      a.replace('aws4_request', 'aws4_request_'),
      a.replace(/Signature=.*/, 'Signature='),
      a.replace(/Signature=(.*)/, (_m, sig: string) => `Signature=${sig.toUpperCase()}`),
      a.replace(/Signature=(.*)/, (_m, sig: string) => `Signature=${sig.slice(0, 63)}`),
      a.replace(/Signature=(.*)/, (_m, sig: string) => `Signature=${sig}0`),
      a.replace(/Signature=(.*)/, 'Signature=' + '0'.repeat(64)),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders='),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders=x-amz-date;host'),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders=host;host;x-amz-date'),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders=HOST;X-AMZ-DATE'),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders=authorization;host;x-amz-date'),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders=__proto__;host;x-amz-date'),
      a.replace('SignedHeaders=host;x-amz-date', 'SignedHeaders=constructor;host;x-amz-date'),
      a.replace(/Credential=[^/]+/, 'Credential='),
      a.replace(/Credential=[^/]+/, 'Credential=__proto__'),
      a.replace(/Credential=[^/]+/, 'Credential=constructor'),
      a.replace('/20240501/', '/2024050/'),
      a.replace('/20240501/', '/99999999/'),
      a.replace('/us-east-1/', '//'),
      a.split(', ').reverse().join(', '),
      a + ', Signature=' + 'a'.repeat(64),
      a.replace(', SignedHeaders', '\n, SignedHeaders'),
      a + '\u0000',
      '\u00e9' + a,
      a.replace('Credential', 'Cr\u00e9dential'),
      'AWS4-HMAC-SHA256 Credential=' + 'A'.repeat(100_000),
      'AWS4-HMAC-SHA256 ' + ' '.repeat(50_000) + 'x',
    ];
    for (const c of cases) {
      let r: ReturnType<typeof verify> | undefined;
      expect(() => (r = verifyAuth(s, c)), JSON.stringify(c.slice(0, 80))).not.toThrow();
      expect(r!.ok, JSON.stringify(c.slice(0, 120))).toBe(false);
    }
  });

  it('rejects dozens of random mutations of a valid value without throwing (fixed seed)', async () => {
    const s = await sign({ headers: { 'content-type': 'application/json' } });
    const a = s.auth;
    const rand = rng(0x5eed);
    const pick = (n: number) => Math.floor(rand() * n);
    // Non-whitespace characters only: the grammar tolerates extra spaces around commas, which is not a change.
    const alphabet = 'AZaz09/=,;-_.:+\\"\'\u00ff\u0100\u{1f600}%';
    const randChar = () => (rand() < 0.5 ? alphabet[pick(alphabet.length)]! : String.fromCharCode(33 + pick(94)));
    const mutate = (x: string): string => {
      switch (pick(6)) {
        case 0: {
          // replace a non-space character with another
          let i = pick(x.length);
          while (x[i] === ' ') i = pick(x.length);
          let c = randChar();
          while (c === x[i]) c = randChar();
          return x.slice(0, i) + c + x.slice(i + 1);
        }
        case 1: {
          // delete a non-space character
          let i = pick(x.length);
          while (x[i] === ' ') i = pick(x.length);
          return x.slice(0, i) + x.slice(i + 1);
        }
        case 2: {
          // insert a character between two non-space characters
          let i = 1 + pick(x.length - 1);
          while (x[i - 1] === ' ' || x[i] === ' ') i = 1 + pick(x.length - 1);
          return x.slice(0, i) + randChar() + x.slice(i);
        }
        case 3:
          return x.slice(0, pick(x.length - 1)); // truncate
        case 4: {
          // swap two distinct characters
          const i = pick(x.length);
          let j = pick(x.length);
          while (x[j] === x[i]) j = pick(x.length);
          const arr = [...x];
          [arr[i], arr[j]] = [arr[j]!, arr[i]!];
          return arr.join('');
        }
        default: {
          // duplicate a slice
          const i = pick(x.length);
          const j = i + 1 + pick(10);
          return x.slice(0, j) + x.slice(i, j) + x.slice(j);
        }
      }
    };
    // Spacing around commas and after the algorithm is not significant in the grammar (see the tolerance test).
    const norm = (x: string) => x.trim().replace(/ *, */g, ',').replace(/ +/g, ' ');
    let n = 0;
    for (let k = 0; k < 300; k++) {
      let m = mutate(a);
      if (rand() < 0.3) m = mutate(m);
      if (norm(m) === norm(a)) continue;
      n++;
      let r: ReturnType<typeof verify> | undefined;
      expect(() => (r = verifyAuth(s, m)), m).not.toThrow();
      expect(r!.ok, m).toBe(false);
    }
    expect(n).toBeGreaterThan(250);
    // The unmutated value still verifies: the failures come from the mutations.
    expect(verifyAuth(s, a).ok).toBe(true);
  });

  it('never throws on random X-Amz-Date values', async () => {
    const s = await sign();
    const rand = rng(42);
    for (let k = 0; k < 100; k++) {
      const len = Math.floor(rand() * 24);
      let d = '';
      for (let i = 0; i < len; i++) d += String.fromCharCode(32 + Math.floor(rand() * 95));
      if (rand() < 0.5) d = `2024${String(Math.floor(rand() * 100)).padStart(2, '0')}${String(Math.floor(rand() * 100)).padStart(2, '0')}T${String(Math.floor(rand() * 100)).padStart(2, '0')}0000Z`;
      if (d === s.headers['x-amz-date']) continue;
      let r: ReturnType<typeof verify> | undefined;
      expect(() => (r = verify({ ...s.req, rawHeaders: raw({ ...s.headers, 'x-amz-date': d }) })), d).not.toThrow();
      expect(r!.ok, d).toBe(false);
    }
  });
});
