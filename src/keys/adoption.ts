// Adopting another proxy's keys: what AWS's sample proxy served (the first secret key C_FindObjects lists with CKA_LABEL =
// the external key id) and what would break when this proxy serves the same token. Pure: the caller searches the
// token (one search per label) and prints the rows.
import type { KeyObject } from '../hsm/key-store.js';
import { assemble } from './catalogue.js';
import { exposure, exposureAllowed } from './exposure.js';

/** One way a key the sample served would fail here, and what to do about it. */
export interface AdoptionFinding {
  problem: 'Missing' | 'SeveralObjects' | 'NotAes' | 'NotAes256' | 'NoEncrypt' | 'NoDecrypt' | 'Exposed' | 'ReservedLabel' | 'UnknownLength' | 'SharedLabel';
  /** breaks: KMS's calls for this key fail (or the sample's data cannot be read); warn: works, but check it. */
  severity: 'breaks' | 'warn';
  message: string;
  fix: string;
}

export interface AdoptionRow {
  keyId: string;
  /** The sample's key stores (uri_path_prefix) that named it. */
  keyStores: string[];
  /** Secret-key objects carrying the label that are not this proxy's own (what the sample could find). */
  objects: number;
  findings: AdoptionFinding[];
}

const AES_256_BYTES = 32;

/** The objects the sample could have found: this proxy's own objects (CKA_ID "xks:...") never came from it. */
function foreign(objects: readonly KeyObject[]): KeyObject[] {
  return objects.filter((o) => !o.id.toString('latin1').startsWith('xks:'));
}

/** What would break for one label, given every secret-key object that carries it. */
export function adoptionFindings(keyId: string, objects: readonly KeyObject[], reserved: ReadonlySet<string>): AdoptionFinding[] {
  const out: AdoptionFinding[] = [];
  if (reserved.has(keyId)) {
    out.push({
      problem: 'ReservedLabel',
      severity: 'breaks',
      message: 'this label is one this proxy keeps for its own keys (health check, audit): never served as an external key',
      fix: 'set hsm.healthKeyLabel or audit.keyLabel to another label',
    });
  }
  const theirs = foreign(objects);
  if (theirs.length === 0) {
    out.push({
      problem: 'Missing',
      severity: 'breaks',
      message: 'no secret key in the token carries this label: KMS calls for it fail (KeyNotFoundException), as they did with the sample',
      fix: 'check the token (--token-label / --token-serial) and the label; remove the id from the key store if it is unused',
    });
    return out;
  }
  if (theirs.length > 1) {
    out.push({
      problem: 'SeveralObjects',
      severity: 'breaks',
      message: `${theirs.length} secret keys carry this label: the sample used whichever the token listed first (it asks for one), so its ciphertexts may be under either; this proxy refuses the label until one remains`,
      fix: "find which key the data is under (decrypt a known ciphertext through the sample with each alone), delete the other (pkcs11-tool --delete-object --type secrkey --id <CKA_ID>); if both hold data, keep the sample serving this key",
    });
  }
  for (const o of theirs) {
    const which = theirs.length > 1 ? ` (CKA_ID ${o.id.toString('hex') || 'empty'})` : '';
    if (o.keyType !== 'aes') {
      out.push({
        problem: 'NotAes',
        severity: 'breaks',
        message: `a ${o.keyType ?? 'non-AES'} key${which}, not AES: only AES-256 keys are served (XKS keySpec AES_256)`,
        fix: 'if it holds data, it never worked with the sample either (AES-GCM needs an AES key); otherwise remove the id from the key store',
      });
      continue;
    }
    if (o.valueLen !== undefined && o.valueLen !== 0 && o.valueLen !== AES_256_BYTES) {
      out.push({
        problem: 'NotAes256',
        severity: 'breaks',
        message: `an AES-${o.valueLen * 8} key${which}: only AES-256 keys are served (KMS's keySpec AES_256)`,
        fix: 'its ciphertexts cannot be read here: keep the sample running for this key, or re-encrypt its data under an AES-256 key through KMS first',
      });
    } else if (!o.valueLen) {
      out.push({ problem: 'UnknownLength', severity: 'warn', message: `the token does not report the key's length${which}: taken as AES-256`, fix: 'check it with pkcs11-tool --list-objects' });
    }
    if (o.attrs.encrypt !== true) {
      out.push({
        problem: 'NoEncrypt',
        severity: 'breaks',
        message: `CKA_ENCRYPT is not true${which}: Encrypt is refused (InvalidKeyUsageException) and GetKeyMetadata lacks ENCRYPT, which KMS requires`,
        fix: "KMS requires both usages, and a key's usage cannot be changed in place: with the sample, KMS's Encrypt calls failed the same way. Give new data another key",
      });
    }
    if (o.attrs.decrypt !== true) {
      out.push({
        problem: 'NoDecrypt',
        severity: 'breaks',
        message: `CKA_DECRYPT is not true${which}: Decrypt is refused, so no ciphertext under this key can be read here`,
        fix: "nothing here can change a key's usage: if the sample decrypted with it, this is not the same key (check the token)",
      });
    }
  }
  // This proxy's own view: material that can leave the HSM is not served unless the operator allowed it (exposure.ts).
  const key = assemble(keyId, [...objects]);
  const reasons = theirs.length === 1 && theirs[0]!.keyType === 'aes' ? exposure(theirs[0]!.attrs) : [];
  if (reasons.length > 0 && !(key && exposureAllowed(key, 1))) {
    out.push({
      problem: 'Exposed',
      severity: 'breaks',
      message: `its material can leave the HSM (${reasons.join('; ')}): this proxy does not serve it as it stands (Encrypt and Decrypt answer InvalidStateException)`,
      fix: `xks keys allow-exposed ${keyId} (recorded in the token and on the audit trail; docs/key-model.md, Adopted keys)`,
    });
  }
  if (theirs.length > 0 && theirs.length < objects.length) {
    out.push({
      problem: 'SharedLabel',
      severity: 'warn',
      message: "this proxy's own objects (a key record, versions) carry the label too: the sample, which asks the token for one secret key with this label, may get one of them instead of the key and fail",
      fix: 'retire the sample (or stop it serving this key) before changing this key here (disable, rotate, allow-exposed ...)',
    });
  }
  return out;
}

/** One row per external key id the sample's key stores named, in the order first named. */
export function adoptionRows(keyStores: readonly { samplePrefix: string; keys: readonly string[] }[], objectsFor: ReadonlyMap<string, readonly KeyObject[]>, reserved: ReadonlySet<string>): AdoptionRow[] {
  const rows = new Map<string, AdoptionRow>();
  for (const ks of keyStores) {
    for (const id of ks.keys) {
      const row = rows.get(id);
      if (row) {
        if (!row.keyStores.includes(ks.samplePrefix)) row.keyStores.push(ks.samplePrefix);
        continue;
      }
      const objects = objectsFor.get(id) ?? [];
      rows.set(id, { keyId: id, keyStores: [ks.samplePrefix], objects: foreign(objects).length, findings: adoptionFindings(id, objects, reserved) });
    }
  }
  return [...rows.values()];
}
