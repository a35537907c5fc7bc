// A throw-away PKI made with the system openssl (3.0): a CA, a server certificate for 127.0.0.1/localhost and client
// certificates (the allowed subject, another subject, expired, from another CA). EC P-256 keys: fast to generate.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  caCert: string;
  server: CertFiles;
  /** CN = the allowed subject, signed by the CA. */
  client: CertFiles;
  /** CN = another name, signed by the same CA. */
  wrongSubject: CertFiles;
  /** CN = another name, subjectAltName DNS = the allowed subject, signed by the CA. */
  sanOnly: CertFiles;
  /** The allowed CN, signed by the CA, valid 2020-01-01 to 2020-01-02. */
  expired: CertFiles;
  /** The allowed CN, signed by another CA. */
  otherCa: CertFiles;
  /** The allowed CN, self-signed (AWS's test client's second negative mTLS case). */
  selfSigned: CertFiles;
  cleanup(): void;
}

const ossl = (cwd: string, args: string[]) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });

function newKey(cwd: string, name: string): string {
  ossl(cwd, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`]);
  return join(cwd, `${name}.key`);
}

function ca(cwd: string, name: string): CertFiles {
  const key = newKey(cwd, name);
  ossl(cwd, ['req', '-x509', '-new', '-key', key, '-subj', `/CN=${name}`, '-days', '2', '-sha256', '-out', `${name}.pem`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { cert: join(cwd, `${name}.pem`), key };
}

/** A CSR with extensions in an extfile; signed by `signer` with `openssl ca` (explicit start and end dates) or x509 -req. */
function leaf(cwd: string, name: string, cn: string, ext: string, signer: CertFiles, dates?: { start: string; end: string }): CertFiles {
  const key = newKey(cwd, name);
  ossl(cwd, ['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', `${name}.csr`]);
  writeFileSync(join(cwd, `${name}.ext`), ext);
  if (dates) {
    // OpenSSL 3.0's x509 has no -not_before/-not_after; `openssl ca` takes -startdate/-enddate.
    const caDir = join(cwd, `ca-${name}`);
    mkdirSync(join(caDir, 'new'), { recursive: true });
    writeFileSync(join(caDir, 'index.txt'), '');
    writeFileSync(join(caDir, 'serial'), '1000\n');
    writeFileSync(
      join(caDir, 'ca.cnf'),
      [
        '[ca]', 'default_ca = d', '[d]', `database = ${caDir}/index.txt`, `new_certs_dir = ${caDir}/new`, `serial = ${caDir}/serial`,
        'default_md = sha256', 'policy = p', 'unique_subject = no', '[p]', 'commonName = supplied', '',
      ].join('\n'),
    );
    ossl(cwd, ['ca', '-batch', '-notext', '-config', join(caDir, 'ca.cnf'), '-cert', signer.cert, '-keyfile', signer.key,
      '-in', `${name}.csr`, '-out', `${name}.pem`, '-startdate', dates.start, '-enddate', dates.end, '-extfile', `${name}.ext`]);
  } else {
    ossl(cwd, ['x509', '-req', '-in', `${name}.csr`, '-CA', signer.cert, '-CAkey', signer.key, '-CAcreateserial', '-days', '2',
      '-sha256', '-extfile', `${name}.ext`, '-out', `${name}.pem`]);
  }
  return { cert: join(cwd, `${name}.pem`), key };
}

export const KMS_CLIENT_CN = 'cks.kms.us-east-1.amazonaws.com';

export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'xks-pki-'));
  const root = ca(dir, 'TestRootCA');
  const other = ca(dir, 'OtherRootCA');
  const clientExt = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';
  const server = leaf(dir, 'server', 'localhost',
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n', root);
  const client = leaf(dir, 'client', KMS_CLIENT_CN, clientExt, root);
  const wrongSubject = leaf(dir, 'wrong', 'cks.kms.eu-west-1.amazonaws.com', clientExt, root);
  const sanOnly = leaf(dir, 'san', 'some-other-name', `${clientExt}subjectAltName=DNS:${KMS_CLIENT_CN}\n`, root);
  const expired = leaf(dir, 'expired', KMS_CLIENT_CN, clientExt, root, { start: '20200101000000Z', end: '20200102000000Z' });
  const otherCa = leaf(dir, 'otherca', KMS_CLIENT_CN, clientExt, other);
  const ssKey = newKey(dir, 'selfsigned');
  ossl(dir, ['req', '-x509', '-new', '-key', ssKey, '-subj', `/CN=${KMS_CLIENT_CN}`, '-days', '2', '-out', 'selfsigned.pem']);
  return {
    dir,
    caCert: root.cert,
    server,
    client,
    wrongSubject,
    sanOnly,
    expired,
    otherCa,
    selfSigned: { cert: join(dir, 'selfsigned.pem'), key: ssKey },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
