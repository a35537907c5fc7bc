// Routing an XKS URI (spec "URIs"): /<prefix>/kms/xks/v1/health or /<prefix>/kms/xks/v1/keys/<id>/<operation>.
import type { XksOperationName } from '../xks/requests.js';

export interface XksRoute {
  prefix: string;
  operation: XksOperationName;
  keyId?: string;
}

const MARK = '/kms/xks/v1/';
const KEY_ROUTE = /^keys\/([A-Za-z0-9._-]{1,128})\/(metadata|encrypt|decrypt)$/;
const OPS = { metadata: 'GetKeyMetadata', encrypt: 'Encrypt', decrypt: 'Decrypt' } as const;
/**
 * The longest path KMS can send: an XksProxyUriPath (the prefix and /kms/xks/v1) of at most 128 characters, then
 * /keys/, a key id of at most 128 and /metadata (271). Anything longer is refused before it is looked at.
 */
const MAX_PATH = 128 + '/keys/'.length + 128 + '/metadata'.length;

/** The route, or undefined for a path that is not an XKS path. The prefix is not checked here. */
export function matchRoute(path: string): XksRoute | undefined {
  if (path.length > MAX_PATH || path.charCodeAt(0) !== 47) return undefined;
  const at = path.indexOf(MARK);
  if (at < 0) return undefined;
  const prefix = path.slice(1, at);
  const rest = path.slice(at + MARK.length);
  if (rest === 'health') return { prefix, operation: 'GetHealthStatus' };
  const m = KEY_ROUTE.exec(rest);
  if (!m) return undefined;
  return { prefix, operation: OPS[m[2] as keyof typeof OPS], keyId: m[1]! };
}
