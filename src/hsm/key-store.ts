// The seam between the key model and the HSM: what keys, import, audit and xks need from a token, in names rather than
// pkcs11js numbers. HsmConnection implements both interfaces for one token; a fleet of several HSMs will implement
// them for many. Code outside src/hsm imports these types, never the HsmConnection class (test/hsm/seam.test.ts).
import type { AttributeName, KeyType, ObjectMatch } from './attributes.js';
import type { Capabilities } from './capabilities.js';
import type { Mechanism } from './mechanisms.js';
import type { Handle } from './module.js';
import type { HsmProfile } from './profile.js';
import type { KeyTemplate } from './templates.js';

export type { AttributeName, KeyType, ObjectClass, ObjectMatch } from './attributes.js';
export type { Capabilities } from './capabilities.js';
export type { Mechanism } from './mechanisms.js';
export type { Handle } from './module.js';
export { readBool } from './module.js';
export type { AesKeySpec, KeyTemplate } from './templates.js';

export interface TokenInfo {
  slot: string;
  label: string;
  serial: string;
  manufacturer: string;
  model: string;
  libraryDescription: string;
  libraryVersion: string;
}

export interface GcmResult {
  iv: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

export interface KeyObject {
  handle: Handle;
  label: string;
  id: Buffer;
  /** CKA_KEY_TYPE by name; undefined when not read or of a type the proxy never uses. */
  keyType: KeyType | undefined;
  /** CKA_VALUE_LEN in bytes; undefined or 0 where the token does not say (SoftHSM 2.6.1 leaves unwrapped keys at 0). */
  valueLen?: number | undefined;
  attrs: Record<string, boolean>;
}

/** What a key store needs from a token: find, generate, create, destroy, encrypt/decrypt, wrap/unwrap, sign. */
export interface KeyStore {
  /** The token (labels in logs, backup files). */
  readonly info: TokenInfo;
  /** What the token can do (RFC 5649 key wrap, RSA-OAEP, AES-CMAC), read at start-up and merged with its profile. */
  readonly capabilities: Capabilities;
  /** What the token's objects can hold and prove (its profile's `attributes`). */
  readonly tokenAttributes: HsmProfile['attributes'];
  /** Bumped by every recovery: key handles cached before it may be stale. */
  readonly generation: number;

  // -- find --
  /** Secret keys with their label, id, key type and usage/evidence attributes. */
  findSecretKeys(match: { label?: string; keyType?: KeyType }): Promise<KeyObject[]>;
  /** Token objects of any class. */
  findObjects(match: ObjectMatch): Promise<Handle[]>;
  /** One object's label, id, key type and evidence, read again. */
  describeObject(handle: Handle): Promise<KeyObject>;
  /** Raw attribute values by name; undefined where the object does not keep one. */
  getAttributes(handle: Handle, names: readonly AttributeName[]): Promise<(Buffer | undefined)[]>;

  // -- generate, create, destroy: only templates from the builders in src/hsm, read back after they are made --
  /** AES key generation unless another mechanism is named (GENERIC_SECRET_KEY_GEN). */
  generateKey(template: KeyTemplate, mechanism?: Mechanism): Promise<KeyObject>;
  generateKeyPair(mechanism: Mechanism, publicTemplate: KeyTemplate, privateTemplate: KeyTemplate): Promise<{ publicKey: Handle; privateKey: Handle }>;
  createObject(template: KeyTemplate): Promise<Handle>;
  destroyObject(handle: Handle): Promise<void>;

  // -- encrypt/decrypt --
  /** The handle to run AES-GCM with (a session copy where the profile asks for one). */
  cryptoHandle(key: Handle): Promise<Handle>;
  dropCryptoHandle(key: Handle): void;
  encryptGcm(key: Handle, plaintext: Buffer, aad: Buffer): Promise<GcmResult>;
  decryptGcm(key: Handle, iv: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): Promise<Buffer>;
  /** Decrypt of data from outside (an import blob): a failure is DataInvalid, never a device error. */
  decryptUntrusted(mechanism: Mechanism, key: Handle, data: Buffer, outBytes: number): Promise<Buffer>;

  // -- wrap/unwrap --
  /** This token's RFC 5649 key wrap, whatever number it gives it. */
  keyWrap(): Mechanism;
  wrapKey(mechanism: Mechanism, wrappingKey: Handle, key: Handle): Promise<Buffer>;
  unwrapUntrusted(mechanism: Mechanism, unwrappingKey: Handle, wrapped: Buffer, template: KeyTemplate): Promise<Handle>;

  // -- sign: MACs inside the HSM, checked by C_Sign and a constant-time compare --
  sign(mechanism: Mechanism, key: Handle, data: Buffer): Promise<Buffer>;
  verify(mechanism: Mechanism, key: Handle, data: Buffer, mac: Buffer): Promise<boolean>;
  hmacSha256(key: Handle, data: Buffer): Promise<Buffer>;
  verifyHmacSha256(key: Handle, data: Buffer, mac: Buffer): Promise<boolean>;
}

/** What the wiring (proxy.ts, cli, health and metrics) needs to run a token, beyond the key store. */
export interface HsmOperations {
  readonly info: TokenInfo;
  readonly capabilities: Capabilities;
  /** The login session is healthy. */
  ping(): Promise<boolean>;
  readonly sessionStats: { open: number; idle: number; waiting: number; size: number; waited: number; refused: number };
  readonly callThreadStats: { calls: number; batches: number };
  readonly asyncCallsInFlight: number;
  /** How far past its budget the oldest call out to the HSM is (ms; 0: none is): an HSM that hangs shows here. */
  readonly overdueMs: number;
  /** Wait (at most `maxMs`) until no call runs off the event loop. */
  drain(maxMs: number): Promise<void>;
  close(): void;
}
