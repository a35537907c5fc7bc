// `xks call health|metadata|encrypt|decrypt`: one XKS request to a running proxy, signed with SigV4 as KMS signs it,
// with a credential of the config. For smoke tests after a change: only that credential's secret is read (not the PIN
// or any other secret), and nothing goes through the HSM here. The answer's body is printed as the proxy sent it.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import { Command } from 'commander';
import { readSigV4Secret, type LoadedFile } from '../config/load.js';
import { loadFor, readInput, warnOnStderr, withConfigOption } from './context.js';
import { signSigV4 } from './sigv4-sign.js';

const XKS_SERVICE = 'kms-xks-proxy';
/** AWS's documentation account: placeholders for what KMS would send. Give real ones where a policy checks them. */
const DEFAULT_PRINCIPAL = 'arn:aws:iam::111122223333:user/xks-call';
const CALL_TIMEOUT_MS = 10_000;

interface CallOptions {
  prefix?: string;
  accessKeyId?: string;
  url?: string;
  ca?: string;
  cert?: string;
  key?: string;
  principal: string;
  kmsKeyArn?: string;
}

function withCallOptions(cmd: Command): Command {
  return withConfigOption(cmd)
    .option('--prefix <path>', 'the key store (URI prefix) to call (default: the first in the config)')
    .option('--access-key-id <id>', "the credential to sign with (default: the key store's first)")
    .option('--url <url>', 'the proxy, e.g. https://xks.example.com (default: the http listener of the config, else its https listener)')
    .option('--ca <file>', 'trust this CA for HTTPS besides the public ones (without --url, the configured certificate is trusted too, for a self-signed one)')
    .option('--cert <file>', 'client certificate, when the proxy asks for mTLS')
    .option('--key <file>', 'client key, when the proxy asks for mTLS')
    .option('--principal <arn>', 'awsPrincipalArn in the request metadata', DEFAULT_PRINCIPAL)
    .option('--kms-key-arn <arn>', "kmsKeyArn in the request metadata (default: a placeholder in the key store's region)");
}

export function callCommand(): Command {
  const call = new Command('call').description('send one signed XKS request to a running proxy, as KMS would (smoke tests); prints the answer');

  call.addCommand(
    withCallOptions(new Command('health'))
      .description('GetHealthStatus')
      .action(async (opts: CallOptions, cmd: Command) => {
        await send(cmd, opts, 'health', { requestMetadata: { kmsRequestId: randomUUID(), kmsOperation: 'KmsHealthCheck' } });
      }),
  );

  call.addCommand(
    withCallOptions(new Command('metadata'))
      .description('GetKeyMetadata')
      .argument('<externalKeyId>')
      .action(async (id: string, opts: CallOptions, cmd: Command) => {
        await send(cmd, opts, `keys/${encodeURIComponent(id)}/metadata`, (region) => ({ requestMetadata: metadata('DescribeKey', opts, region) }));
      }),
  );

  call.addCommand(
    withCallOptions(new Command('encrypt'))
      .description('Encrypt: prints the ciphertext, IV, tag and ciphertextMetadata as JSON, which `xks call decrypt` reads')
      .argument('<externalKeyId>')
      .option('--plaintext <text>', 'the plaintext, as UTF-8 text')
      .option('--plaintext-base64 <base64>', 'the plaintext, Base64-encoded bytes')
      .option('--aad <text>', 'additional authenticated data (UTF-8); decrypt needs the same')
      .option('--cdiv', 'ask for the ciphertextDataIntegrityValue (SHA_256)')
      .action(async (id: string, opts: CallOptions & { plaintext?: string; plaintextBase64?: string; aad?: string; cdiv?: boolean }, cmd: Command) => {
        if ((opts.plaintext === undefined) === (opts.plaintextBase64 === undefined)) throw new Error('give --plaintext TEXT or --plaintext-base64 B64');
        const plaintext = opts.plaintextBase64 ?? Buffer.from(opts.plaintext!, 'utf8').toString('base64');
        await send(cmd, opts, `keys/${encodeURIComponent(id)}/encrypt`, (region) => ({
          requestMetadata: metadata('Encrypt', opts, region),
          plaintext,
          encryptionAlgorithm: 'AES_GCM',
          ...(opts.aad !== undefined ? { additionalAuthenticatedData: Buffer.from(opts.aad, 'utf8').toString('base64') } : {}),
          ...(opts.cdiv ? { ciphertextDataIntegrityValueAlgorithm: 'SHA_256' } : {}),
        }));
      }),
  );

  call.addCommand(
    withCallOptions(new Command('decrypt'))
      .description('Decrypt what `xks call encrypt` printed (its JSON, from --in or standard input)')
      .argument('<externalKeyId>')
      .option('--in <file>', 'the JSON an encrypt answered (ciphertext, initializationVector, authenticationTag, ciphertextMetadata); - for standard input', '-')
      .option('--aad <text>', 'the additional authenticated data the encrypt was given (UTF-8)')
      .option('--text', 'print only the plaintext, as UTF-8 text')
      .action(async (id: string, opts: CallOptions & { in: string; aad?: string; text?: boolean }, cmd: Command) => {
        const enc = readEncryptOutput(opts.in);
        const answer = await send(
          cmd,
          opts,
          `keys/${encodeURIComponent(id)}/decrypt`,
          (region) => ({
            requestMetadata: metadata('Decrypt', opts, region),
            ciphertext: enc.ciphertext,
            encryptionAlgorithm: 'AES_GCM',
            initializationVector: enc.initializationVector,
            authenticationTag: enc.authenticationTag,
            ...(enc.ciphertextMetadata !== undefined ? { ciphertextMetadata: enc.ciphertextMetadata } : {}),
            ...(opts.aad !== undefined ? { additionalAuthenticatedData: Buffer.from(opts.aad, 'utf8').toString('base64') } : {}),
          }),
          !opts.text,
        );
        if (opts.text) console.log(Buffer.from(String((answer as { plaintext?: unknown }).plaintext ?? ''), 'base64').toString('utf8'));
      }),
  );
  return call;
}

function metadata(kmsOperation: string, opts: CallOptions, region: string) {
  return {
    kmsRequestId: randomUUID(),
    kmsOperation,
    awsPrincipalArn: opts.principal,
    kmsKeyArn: opts.kmsKeyArn ?? `arn:aws:kms:${region}:111122223333:key/00000000-0000-0000-0000-000000000000`,
  };
}

function readEncryptOutput(from: string): Record<string, string | undefined> {
  let text: string;
  try {
    text = readFileSync(from === '-' ? 0 : from, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${from === '-' ? 'standard input' : from} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new Error('the input is not JSON: give what `xks call encrypt` printed');
  }
  const o = v as Record<string, unknown>;
  for (const f of ['ciphertext', 'initializationVector', 'authenticationTag']) {
    if (typeof o?.[f] !== 'string') throw new Error(`the input has no ${f}: give what \`xks call encrypt\` printed`);
  }
  return o as Record<string, string | undefined>;
}

/**
 * Sign and send one request; print the answer's body (a success) or throw its errorName and message (exit 1). Returns
 * the parsed body.
 */
async function send(cmd: Command, opts: CallOptions, path: string, body: object | ((region: string) => object), print = true): Promise<unknown> {
  const loaded = loadFor(cmd, { pin: false });
  const { prefixIndex, credentialIndex } = chooseCredential(loaded, opts);
  const prefix = loaded.config.prefixes[prefixIndex]!;
  const policy = { mode: loaded.config.secretFilePermissions, warnings: [] as string[] };
  const secret = readSigV4Secret(loaded, prefixIndex, credentialIndex, policy);
  for (const w of policy.warnings) warnOnStderr(w);
  const base = opts.url ? new URL(opts.url) : defaultUrl(loaded);
  const url = new URL(`${base.pathname.replace(/\/$/, '')}/${prefix.path ? `${prefix.path}/` : ''}kms/xks/v1/${path}`, base);
  const text = JSON.stringify(typeof body === 'function' ? body(prefix.region) : body);
  const headers = signSigV4({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json' },
    body: text,
    accessKeyId: prefix.credentials[credentialIndex]!.accessKeyId,
    secret,
    region: prefix.region,
    service: XKS_SERVICE,
    date: new Date(),
  });
  const answer = await post(url, headers, text, tlsOptions(loaded, opts, url));
  let json: unknown;
  try {
    json = JSON.parse(answer.text);
  } catch {
    json = undefined;
  }
  if (answer.status < 200 || answer.status > 299) {
    const e = json as { errorName?: string; errorMessage?: string } | undefined;
    throw new Error(`${url.pathname}: HTTP ${answer.status} ${e?.errorName ?? ''}${e?.errorMessage ? `: ${e.errorMessage}` : answer.text ? `: ${answer.text.slice(0, 200)}` : ''}`);
  }
  if (print) console.log(answer.text);
  return json;
}

function chooseCredential(loaded: LoadedFile, opts: CallOptions): { prefixIndex: number; credentialIndex: number } {
  const prefixes = loaded.config.prefixes;
  if (prefixes.length === 0) throw new Error('the configuration has no key store (prefixes): nothing to call');
  const prefixIndex = opts.prefix === undefined ? 0 : prefixes.findIndex((p) => p.path === opts.prefix!.replace(/^\/|\/$/g, ''));
  if (prefixIndex < 0) throw new Error(`no key store with prefix "${opts.prefix}" in the configuration (${prefixes.map((p) => p.path).join(', ')})`);
  const creds = prefixes[prefixIndex]!.credentials;
  const credentialIndex = opts.accessKeyId === undefined ? 0 : creds.findIndex((c) => c.accessKeyId === opts.accessKeyId);
  if (credentialIndex < 0) throw new Error(`key store "${prefixes[prefixIndex]!.path}" has no credential ${opts.accessKeyId}`);
  return { prefixIndex, credentialIndex };
}

/** The config's own listener: http first (the health check's), else https. A wildcard address is called on loopback. */
function defaultUrl(loaded: LoadedFile): URL {
  const l = loaded.config.listeners;
  const at = l.http ? { scheme: 'http', ...l.http } : l.https ? { scheme: 'https', host: l.https.host, port: l.https.port } : undefined;
  if (!at) throw new Error('the configuration has no http or https listener: give --url');
  if (at.port === 0) throw new Error('the listener port is 0 (any free port): give --url');
  const host = at.host === '0.0.0.0' || at.host === '' ? '127.0.0.1' : at.host === '::' ? '::1' : at.host;
  return new URL(`${at.scheme}://${host.includes(':') ? `[${host}]` : host}:${at.port}/`);
}

function tlsOptions(loaded: LoadedFile, opts: CallOptions, url: URL): https.RequestOptions {
  if (url.protocol !== 'https:') return {};
  // Public CAs, plus --ca, plus the configured certificate when calling the config's own listener (a self-signed demo
  // certificate is its own CA); another --url is another server, whose certificate this host's config says nothing of.
  const own = opts.url ? undefined : loaded.config.listeners.https?.certFile;
  const extra = [
    ...(opts.ca ? [readInput(opts.ca, '--ca')] : []),
    ...(own ? [readInput(own, 'listeners.https.certFile')] : []),
  ].map((b) => b.toString('utf8'));
  const mtls = loaded.config.listeners.https?.mtls;
  if (mtls && !opts.url && (!opts.cert || !opts.key)) throw new Error('the https listener asks for a client certificate (mTLS): give --cert and --key');
  return {
    ca: [...rootCertificates, ...extra],
    ...(opts.cert ? { cert: readInput(opts.cert, '--cert') } : {}),
    ...(opts.key ? { key: readInput(opts.key, '--key') } : {}),
  };
}

function post(url: URL, headers: Record<string, string>, body: string, tls: https.RequestOptions): Promise<{ status: number; text: string }> {
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(
      url,
      { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, ...tls },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.setTimeout(CALL_TIMEOUT_MS, () => req.destroy(new Error(`no answer from ${url.origin} within ${CALL_TIMEOUT_MS / 1000} s`)));
    req.on('error', (e: NodeJS.ErrnoException) => reject(new Error(`${url.origin}: ${e.code === 'ECONNREFUSED' ? 'connection refused (is the proxy running?)' : e.message}`)));
    req.end(body);
  });
}
