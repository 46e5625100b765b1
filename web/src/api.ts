// The XenAPI over JSON-RPC 2.0 at /jsonrpc of the page's own origin.

/** A XenAPI failure: `code` is xapi's error code (SESSION_INVALID, VM_BAD_POWER_STATE, …). */
export class XapiError extends Error {
  constructor(
    readonly code: string,
    readonly params: string[] = [],
  ) {
    super(describe(code, params))
  }
}

const WORDS: Record<string, (p: string[]) => string> = {
  SESSION_AUTHENTICATION_FAILED: () => 'Wrong user name or password.',
  SESSION_INVALID: () => 'Your session has expired; please log in again.',
  HOST_IS_SLAVE: (p) => `This host is a pool member; log in on the pool master${p[0] ? ` at ${p[0]}` : ''}.`,
  VM_BAD_POWER_STATE: (p) => `The VM is ${p[2] ?? 'in another state'}; this needs it ${p[1] ?? 'in another state'}.`,
  OPERATION_NOT_ALLOWED: (p) => `This operation is not allowed${p[0] ? `: ${p[0]}` : ''}.`,
  OTHER_OPERATION_IN_PROGRESS: (p) => `Another operation (${p[2] ?? '?'}) is in progress on this ${p[0] ?? 'object'}.`,
  NOT_IMPLEMENTED: (p) => `Not implemented by this server yet${p[0] ? `: ${p[0]}` : ''}.`,
  MESSAGE_METHOD_UNKNOWN: (p) => `The server does not know ${p[0] ?? 'this call'}.`,
  HANDLE_INVALID: (p) => `That ${p[0] ?? 'object'} no longer exists.`,
  SR_FULL: () => 'The storage repository is full.',
  VM_REQUIRES_SR: () => 'The VM needs a storage repository this host cannot see.',
  VDI_IN_USE: () => 'The disk is in use.',
  HOST_NOT_ENOUGH_FREE_MEMORY: () => 'The host does not have enough free memory.',
  TASK_CANCELLED: () => 'The task was cancelled.',
  VM_CANNOT_DELETE_DEFAULT_TEMPLATE: () => 'Default templates cannot be deleted.',
  VM_HAS_CHECKPOINT: () => 'The VM has a checkpoint.',
  HTTP_ERROR: (p) => `The server answered ${p[0] ?? 'an error'}.`,
  NETWORK_ERROR: (p) => `The server cannot be reached${p[0] ? ` (${p[0]})` : ''}.`,
}

/** An error in words, followed by its XenAPI code and parameters. */
export function describe(code: string, params: string[]): string {
  const words = WORDS[code]?.(params)
  const detail = params.length ? ` [${params.join(', ')}]` : ''
  return words ? `${words} (${code}${detail})` : `${code}${detail}`
}

let nextId = 1

/** One JSON-RPC call; rejects with a XapiError. `signal` aborts it (used for the event loop on logout). */
export async function rpc<T = unknown>(method: string, params: unknown[], signal?: AbortSignal): Promise<T> {
  let res: Response
  try {
    res = await fetch('/jsonrpc', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', method, params, id: nextId++ }),
      signal,
    })
  } catch (err) {
    if (signal?.aborted) throw err
    throw new XapiError('NETWORK_ERROR', [String((err as Error).message ?? err)])
  }
  if (!res.ok) throw new XapiError('HTTP_ERROR', [`${res.status} ${res.statusText}`])
  const body = (await res.json()) as { result?: T; error?: { message: string; data?: unknown[] } }
  if (body.error) throw new XapiError(body.error.message, (body.error.data ?? []).map(String))
  return body.result as T
}

/** The refs in a task's `result` (an XML-RPC value fragment, as xapi keeps it). */
export function refsOfResult(result: string): string[] {
  return result.match(/OpaqueRef:[0-9a-zA-Z-]+/g) ?? []
}

export const NULL_REF = 'OpaqueRef:NULL'
