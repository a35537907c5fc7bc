// AWS Signature Version 4 verification (spec "Authentication"). Pure: the request's parts in, a verdict out.
// Verifies exactly the headers SignedHeaders lists (KMS signs host;x-amz-date, curl adds content-type),
// over the raw body bytes, with a 5-minute clock window and a constant-time comparison.
import { createHmac, hash, timingSafeEqual } from 'node:crypto';

export const XKS_SERVICE = 'kms-xks-proxy';
const ALGORITHM = 'AWS4-HMAC-SHA256';
const MAX_SKEW_MS = 5 * 60 * 1000;

export interface SigV4Request {
  method: string;
  /** The path as received, without the query. */
  path: string;
  query: string;
  /** Node's rawHeaders: name, value, name, value ... */
  rawHeaders: string[];
  body: Buffer;
}

export interface SigV4Expectation {
  region: string;
  service: string;
  secretFor: (accessKeyId: string) => string | undefined;
  now: number;
}

export type SigV4Result = { ok: true; accessKeyId: string } | { ok: false; reason: string };

const AUTH_RE =
  /^AWS4-HMAC-SHA256 +Credential=([^/,\s]+)\/(\d{8})\/([^/,\s]+)\/([^/,\s]+)\/aws4_request *, *SignedHeaders=([a-z0-9;-]+) *, *Signature=([0-9a-f]{64})$/;

export function parseAuthorization(value: string) {
  const m = AUTH_RE.exec(value.trim());
  if (!m) return undefined;
  return { accessKeyId: m[1]!, date: m[2]!, region: m[3]!, service: m[4]!, signedHeaders: m[5]!.split(';'), signature: m[6]! };
}

/**
 * ISO 8601 basic format, e.g. 20240101T120000Z, and a real calendar time: Date.UTC rolls "20261206T253000Z" over to
 * the next day, so each field is checked against its range (without allocating: this runs for every request).
 */
export function parseAmzDate(value: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  const [y, mo, d, h, mi, sec] = [+m[1]!, +m[2]!, +m[3]!, +m[4]!, +m[5]!, +m[6]!];
  const leap = (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
  const days = mo === 2 ? (leap ? 29 : 28) : mo === 4 || mo === 6 || mo === 9 || mo === 11 ? 30 : 31;
  if (mo < 1 || mo > 12 || d < 1 || d > days || h > 23 || mi > 59 || sec > 59) return undefined;
  return Date.UTC(y, mo - 1, d, h, mi, sec);
}

/** Header values by lower-case name, in order, each trimmed with inner runs of spaces collapsed (one pass). */
function indexHeaders(rawHeaders: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    let v = rawHeaders[i + 1]!.trim();
    if (v.includes('  ')) v = v.replace(/ +/g, ' ');
    const list = m.get(name);
    if (list) list.push(v);
    else m.set(name, [v]);
  }
  return m;
}

const NONE: string[] = [];

export function canonicalQuery(query: string): string {
  if (!query) return '';
  return query
    .split('&')
    .filter((p) => p.length > 0)
    .map((p) => {
      const i = p.indexOf('=');
      return i < 0 ? [p, ''] : [p.slice(0, i), p.slice(i + 1)];
    })
    .sort((a, b) => (a[0]! < b[0]! ? -1 : a[0]! > b[0]! ? 1 : a[1]! < b[1]! ? -1 : a[1]! > b[1]! ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

export function sha256Hex(data: Buffer | string): string {
  return hash('sha256', data, 'hex'); // one-shot: no Hash object per call on the hot path
}

/** Signing keys depend only on secret, date, region and service: derive once per day, not per request. */
const signingKeys = new Map<string, Buffer>();
function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  const id = `${date}/${region}/${service}/${secret}`;
  let k = signingKeys.get(id);
  if (!k) {
    const kDate = createHmac('sha256', `AWS4${secret}`).update(date).digest();
    const kRegion = createHmac('sha256', kDate).update(region).digest();
    const kService = createHmac('sha256', kRegion).update(service).digest();
    k = createHmac('sha256', kService).update('aws4_request').digest();
    if (signingKeys.size > 256) signingKeys.clear();
    signingKeys.set(id, k);
  }
  return k;
}

export function verifySigV4(req: SigV4Request, exp: SigV4Expectation): SigV4Result {
  const headers = indexHeaders(req.rawHeaders);
  const authValues = headers.get('authorization') ?? NONE;
  if (authValues.length !== 1) return { ok: false, reason: 'missing or repeated Authorization header' };
  const auth = parseAuthorization(authValues[0]!);
  if (!auth) return { ok: false, reason: `Authorization is not a well-formed ${ALGORITHM} header` };
  if (auth.service !== exp.service) return { ok: false, reason: `credential scope names service ${auth.service}, expected ${exp.service}` };
  if (auth.region !== exp.region) return { ok: false, reason: `credential scope names region ${auth.region}, expected ${exp.region}` };
  const secret = exp.secretFor(auth.accessKeyId);
  if (secret === undefined) return { ok: false, reason: 'unknown access key id' };

  const signed = auth.signedHeaders;
  if (!signed.includes('host')) return { ok: false, reason: 'SignedHeaders must include host' };
  const sorted = [...signed].sort();
  if (sorted.some((h, i) => h !== signed[i] || (i > 0 && h === sorted[i - 1]))) {
    return { ok: false, reason: 'SignedHeaders must be sorted and unique' };
  }
  const amzDates = headers.get('x-amz-date') ?? NONE;
  if (amzDates.length !== 1 || !signed.includes('x-amz-date')) return { ok: false, reason: 'X-Amz-Date must be present once and signed' };
  const amzDate = amzDates[0]!;
  const t = parseAmzDate(amzDate);
  if (t === undefined) return { ok: false, reason: 'X-Amz-Date is not in yyyymmddThhmmssZ form' };
  if (Math.abs(exp.now - t) > MAX_SKEW_MS) return { ok: false, reason: 'the signature is outside the 5-minute window (check the clocks)' };
  if (amzDate.slice(0, 8) !== auth.date) return { ok: false, reason: 'credential scope date does not match X-Amz-Date' };

  const payloadHash = sha256Hex(req.body);
  const declared = headers.get('x-amz-content-sha256') ?? NONE;
  if (declared.length > 0 && declared[0] !== payloadHash && declared[0] !== 'UNSIGNED-PAYLOAD') {
    return { ok: false, reason: 'X-Amz-Content-Sha256 does not match the body' };
  }
  let canonicalHeaders = '';
  for (const name of signed) {
    const values = headers.get(name);
    if (values === undefined) return { ok: false, reason: `signed header ${name} is missing` };
    canonicalHeaders += `${name}:${values.join(',')}\n`;
  }
  const canonicalRequest = `${req.method}\n${req.path}\n${canonicalQuery(req.query)}\n${canonicalHeaders}\n${signed.join(';')}\n${payloadHash}`;
  const scope = `${auth.date}/${auth.region}/${auth.service}/aws4_request`;
  const stringToSign = `${ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`;
  const expected = createHmac('sha256', signingKey(secret, auth.date, auth.region, auth.service)).update(stringToSign).digest();
  const given = Buffer.from(auth.signature, 'hex');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, reason: 'signature mismatch' };
  return { ok: true, accessKeyId: auth.accessKeyId };
}
