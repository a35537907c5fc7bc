// How an external key maps onto token objects: CKA_LABEL is the external key id, CKA_ID tags the version.
// A bare AES key made with `pkcs11-tool --keygen --label X` (any or no CKA_ID) is version 1 of key X.

const VERSION_ID = /^xks:v([1-9][0-9]{0,8})$/;

export function versionId(version: number): Buffer {
  return Buffer.from(`xks:v${version}`, 'ascii');
}

export function versionFromId(id: Buffer): number {
  const m = VERSION_ID.exec(id.toString('latin1'));
  return m ? Number(m[1]) : 1;
}

/** XKS externalKeyId: at most 128 of A-Za-z0-9._- (spec "URIs"). */
export const EXTERNAL_KEY_ID = /^[A-Za-z0-9._-]{1,128}$/;
