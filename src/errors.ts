// The one base of every error the proxy names (architecture: "every failure has a name"). `code` is the only
// discriminant: each layer narrows it to its own union (HsmErrorCode, KeyErrorName, XksErrorName, ...), and each
// surface (XKS, admin, CLI) turns codes into its names through a table the compiler checks with `satisfies`.
export class ProxyError<Code extends string = string> extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
  }
}

/**
 * An error as a client of one of the HTTP surfaces (XKS, admin) sees it: a name of that surface, its HTTP status, and
 * a message fit to send. KMS writes XKS messages to the customer's CloudWatch Logs: printable ASCII, under 512
 * characters, and never a secret (messages are written so; this only keeps the form).
 */
export class AnswerError<Code extends string = string> extends ProxyError<Code> {
  constructor(
    code: Code,
    message: string,
    readonly status: number,
  ) {
    super(code, message.replace(/[^\x20-\x7e]/g, '?').slice(0, 500));
  }
}
