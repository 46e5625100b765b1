// The one encoding of an agent's failures: what a call or stream handler threw becomes a
// failure body (contract.ts, AgentFailure), and the caller turns the body back into an error. A
// XenAPI error (anything thrown with a string `code` and array `params`) keeps its code and
// params; anything else arrives as an AgentError with the message and the answer's status.
import { XapiError } from '../idl/errors.js'
import type { AgentFailure } from './contract.js'

export class AgentError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message)
  }
}

/** The failure body for a thrown value. */
export function encodeFailure(err: unknown): AgentFailure {
  const e = (typeof err === 'object' && err !== null ? err : {}) as { message?: unknown; code?: unknown; params?: unknown }
  return {
    ...(typeof e.message === 'string' ? { error: e.message } : {}),
    ...(typeof e.code === 'string' && Array.isArray(e.params) ? { xapi: [e.code, ...e.params.map(String)] } : {}),
  }
}

/** The error a failure body with this status stands for. */
export function decodeFailure(f: AgentFailure, status: number): XapiError | AgentError {
  return f.xapi ? XapiError.relayed(f.xapi[0]!, f.xapi.slice(1)) : new AgentError(f.error ?? `agent answered ${status}`, status)
}

/**
 * Another host's agent could not be reached: no connection, no TLS session (its certificate is
 * not the pool's, or ours is not), a timeout, or a connection lost before the answer. It is the
 * XenAPI error CANNOT_CONTACT_HOST [host] as it stands; `cause` is the transport's error.
 */
export class AgentUnreachable extends XapiError {
  constructor(hostRef: string, cause: Error) {
    super('CANNOT_CONTACT_HOST', [hostRef])
    this.cause = cause
  }
}
