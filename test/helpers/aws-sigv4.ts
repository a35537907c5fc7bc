// SigV4 signing for every test client, by AWS's own implementation (@smithy/signature-v4). A test's request is never
// signed by the server's verifier (src/http/sigv4.ts): an independent signer is what makes its tests worth anything.
import { Sha256 } from '@aws-crypto/sha256-js';
import { SignatureV4 } from '@smithy/signature-v4';

export interface SigV4Credential {
  accessKeyId: string;
  secret: string;
  region: string;
  service: string;
  /**
   * Add and sign X-Amz-Content-Sha256 (smithy's default, true). KMS signs host and x-amz-date only: false signs as
   * KMS does.
   */
  applyChecksum?: boolean;
}

export interface SigV4Options extends SigV4Credential {
  /** Sign at this time instead of now (expired signatures). */
  signingDate?: Date;
  /** Headers sent but left out of SignedHeaders. */
  unsignableHeaders?: string[];
}

export interface RequestToSign {
  method: string;
  /** Where the request goes (its protocol and hostname); the host header signed is the one in `headers`. */
  url: URL;
  path: string;
  query?: Record<string, string>;
  headers: Record<string, string>;
  body: string | Uint8Array;
}

/** smithy's signer for one credential (a test of the verifier may also use its canonicalisation directly). */
export function awsSigner(c: SigV4Credential): SignatureV4 {
  return new SignatureV4({
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secret },
    region: c.region,
    service: c.service,
    sha256: Sha256,
    ...(c.applyChecksum !== undefined ? { applyChecksum: c.applyChecksum } : {}),
  });
}

/** The request's headers, signed: the ones given plus Authorization, X-Amz-Date (and X-Amz-Content-Sha256). */
export async function awsSign(req: RequestToSign, o: SigV4Options): Promise<Record<string, string>> {
  const signed = await awsSigner(o).sign(
    {
      method: req.method,
      protocol: req.url.protocol,
      hostname: req.url.hostname,
      ...(req.url.port ? { port: Number(req.url.port) } : {}),
      path: req.path,
      ...(req.query ? { query: req.query } : {}),
      headers: req.headers,
      body: req.body,
    },
    {
      ...(o.signingDate ? { signingDate: o.signingDate } : {}),
      ...(o.unsignableHeaders ? { unsignableHeaders: new Set(o.unsignableHeaders) } : {}),
    },
  );
  return signed.headers as Record<string, string>;
}
