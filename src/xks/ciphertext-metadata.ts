// ciphertextMetadata: the proxy's own field, returned on encrypt and handed back by KMS on decrypt.
// Format 1 is 5 bytes: 0x01 (format version) || u32 BE key version. Authenticated through the GCM AAD.

export const METADATA_FORMAT = 1;

export function encodeCiphertextMetadata(keyVersion: number): Buffer {
  const b = Buffer.allocUnsafe(5);
  b.writeUInt8(METADATA_FORMAT, 0);
  b.writeUInt32BE(keyVersion, 1);
  return b;
}

/** The key version, or undefined when the bytes are not a metadata value this proxy wrote. */
export function decodeCiphertextMetadata(b: Buffer): number | undefined {
  if (b.length !== 5 || b[0] !== METADATA_FORMAT) return undefined;
  const v = b.readUInt32BE(1);
  return v >= 1 ? v : undefined;
}
