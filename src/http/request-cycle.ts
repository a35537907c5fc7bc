// One request cycle for the XKS and admin listeners: route -> read the body -> authenticate -> refuse while the audit
// trail cannot be sealed -> parse with the operation's schema -> run -> answer, then log, observe and audit once,
// whatever happened. Each surface (xks-handler.ts, admin-handler.ts) says how it routes, authenticates and answers;
// the order and the bookkeeping are here, written once.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ZodType } from 'zod';
import type { AnswerError } from '../errors.js';
import { HsmError } from '../hsm/errors.js';
import type { Deadlines } from './deadlines.js';
import { readBody } from './read-body.js';

/**
 * One operation of a surface: the schema its body must pass, and what it does with the request the schema parsed.
 * (`never`: a table's entries each take their own request type, and the cycle passes each the one its schema made.)
 */
export interface Operation<Call, Answer> {
  schema: ZodType;
  run(call: Call, request: never): Promise<Answer>;
}

/** The fields of a request line that the cycle fills in; each surface's line has more. */
export interface CycleLog {
  /** The client's address (the TCP peer: a load balancer's when one is in front). */
  from: string | undefined;
  outcome: 'ok' | 'error' | undefined;
  status: number | undefined;
  errorName: string | undefined;
  reason: string | undefined;
  hsmError: string | undefined;
  ms: number | undefined;
}

/** An authenticated request: the operation it names, the call it runs with, its JSON body. */
export interface Admitted<Call, Answer> {
  name: string;
  operation: Operation<Call, Answer>;
  call: Call;
  json: unknown;
  /** Subject to the refusal while the audit trail cannot be sealed (everything but XKS health). */
  refusable: boolean;
}

export interface Surface<Route, Call, Answer, Log extends CycleLog, E extends AnswerError> {
  newLog(req: IncomingMessage): Log;
  /** Path and method (404, 405): what the request asks for, before its body is read. */
  route(req: IncomingMessage, res: ServerResponse, path: string, log: Log): Route;
  bodyLimit: number;
  tooLarge(): E;
  /** Signature and everything the surface checks before the body's shape: the operation to run, or a throw. */
  admit(route: Route, req: IncomingMessage, path: string, query: string, body: Buffer, log: Log): Admitted<Call, Answer>;
  /** Why key operations are refused for now (audit.onFailure refuse while the trail cannot be sealed), or undefined. */
  refusal: (() => string | undefined) | undefined;
  refused(reason: string): E;
  /** A body that does not fit the operation's schema: the message names the field. */
  invalid(message: string, tooLarge: boolean): E;
  /** Answers 200 with the operation's result (and notes what the log needs from it). */
  answer(res: ServerResponse, result: Answer, log: Log): void;
  toError(err: unknown): E;
  /** Answers with the error, closing the connection when asked (the rest of the body was not read). */
  answerError(res: ServerResponse, e: E, log: Log, close: boolean): void;
  /** After a 500: the error behind it, for the operator (each request still has its own line). */
  unexpected(err: unknown, log: Log): void;
  /** Once per request, after its answer: the request line, metrics, the audit line. */
  finish(req: IncomingMessage, log: Log): void;
  /** No request is held longer than this: past it, `timedOut()`, and the connection closes. */
  budget?: { ms: number; deadlines: Deadlines; timedOut(): E } | undefined;
}

/** Serves one request of a surface; never throws, always answers once. */
export function serve<Route, Call, Answer, Log extends CycleLog, E extends AnswerError>(
  s: Surface<Route, Call, Answer, Log, E>,
  req: IncomingMessage,
  res: ServerResponse,
): void {
  const started = performance.now();
  const log = s.newLog(req);
  let finished = false;
  const finish = () => {
    finished = true;
    if (deadline) s.budget!.deadlines.remove(deadline);
    log.ms = round(performance.now() - started);
    s.finish(req, log);
  };
  const fail = (err: unknown, close = false) => {
    if (finished) return;
    const e = s.toError(err);
    if (e.status === 500) s.unexpected(err, log);
    if (!res.headersSent) s.answerError(res, e, log, close);
    log.outcome = 'error';
    log.status = e.status;
    log.errorName = e.code;
    log.reason ??= e.message;
    if (err instanceof HsmError) log.hsmError = err.ckr ?? err.code;
    finish();
  };
  // Past the budget the caller gets its answer now; the HSM call, if any, finishes in the background unanswered.
  const deadline = s.budget?.deadlines.add(s.budget.ms, () => fail(s.budget!.timedOut(), true));
  let cutShort = false;

  const handle = async (): Promise<void> => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const route = s.route(req, res, path, log);
    const body = await readBody(req, s.bodyLimit, () => {
      cutShort = true;
      return s.tooLarge();
    });
    const { name, operation, call, json, refusable } = s.admit(route, req, path, q < 0 ? '' : url.slice(q + 1), body, log);
    if (refusable && s.refusal) {
      const why = s.refusal();
      if (why) throw s.refused(why);
    }
    const r = operation.schema.safeParse(json);
    if (!r.success) {
      const { message, tooLarge } = issueMessage(r.error.issues[0]!, json, operation.schema, name);
      throw s.invalid(message, tooLarge);
    }
    const result = await operation.run(call, r.data as never);
    if (finished) return; // answered already (the request's deadline passed)
    s.answer(res, result, log);
    log.outcome = 'ok';
    log.status = 200;
    finish();
  };
  // After an oversized body the rest of it is not read: the connection cannot carry another request.
  handle().catch((err: unknown) => fail(err, cutShort));
}

/**
 * A body's first zod issue as one sentence that names the field. `operation` names the operation for an unknown field.
 * zod 4's issues do not carry the input: the value is looked up, so a missing field and a wrong type read differently.
 */
export function issueMessage(
  issue: { code: string; path: PropertyKey[]; message: string; keys?: string[]; params?: unknown },
  input: unknown,
  schema: ZodType,
  operation: string,
): { message: string; tooLarge: boolean } {
  const field = issue.path.map(String).join('.') || 'body';
  if (issue.code === 'unrecognized_keys') {
    const known = Object.keys((schema as unknown as { shape?: object }).shape ?? {});
    const extra = (issue.keys ?? []).map((k) => JSON.stringify(k)).join(', ');
    return { message: `${operation} has no field ${extra}${known.length ? ` (its fields: ${known.join(', ')})` : ' (it takes {})'}`, tooLarge: false };
  }
  if (issue.code === 'invalid_type' && valueAt(input, issue.path) === undefined) return { message: `${field} is required`, tooLarge: false };
  // Our own checks may name the field already (the XKS Base64 ones do): not twice.
  const message = issue.code === 'custom' && issue.message.startsWith(field) ? issue.message : `${field}: ${issue.message}`;
  return { message, tooLarge: issue.code === 'custom' && (issue.params as { tooLarge?: boolean } | undefined)?.tooLarge === true };
}

function valueAt(value: unknown, path: readonly PropertyKey[]): unknown {
  let v = value;
  for (const k of path) v = v !== null && typeof v === 'object' ? (v as Record<PropertyKey, unknown>)[k] : undefined;
  return v;
}

/** A request's duration for its log line: milliseconds to two decimals. */
function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** The access key id in a request's Authorization header, whether or not it authenticated (for the audit trail). */
export function claimedAccessKeyId(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const id = typeof h === 'string' ? /Credential=([^/,\s]{1,128})\//.exec(h)?.[1] : undefined;
  return id?.replace(/[^\x21-\x7e]/g, '?');
}
