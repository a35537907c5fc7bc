// CKA_IDs as the previous release wrote them (layout 1, docs/key-model.md "Tokens made by earlier releases"): the
// proxy still reads them, so tests make such objects directly to stand for a token made by that release.
export function legacyVersionId(version: number, createdAt?: Date, nonce?: string): Buffer {
  const t = createdAt ? `;t=${Math.floor(createdAt.getTime() / 1000)}` : '';
  const n = nonce ? `;n=${nonce}` : '';
  return Buffer.from(`xks:v${version}${t}${n}`, 'ascii');
}

export function legacyCandidateId(version: number, startedMs: number, nonce: string): Buffer {
  return Buffer.from(`xks:c${version};t=${Math.floor(startedMs)};n=${nonce}`, 'ascii');
}

export function legacyRecordId(json: string): Buffer {
  return Buffer.from(`xks:key:${json}`, 'utf8');
}
