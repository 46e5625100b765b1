// A XenAPI failure: an error code of the datamodel and its parameters, all strings on the wire.
import type { DatamodelErrorCode } from './records.js'

/**
 * The codes Flotilla raises that xapi's published datamodel does not list, with their
 * parameters: all are xapi's own (ocaml/xapi-consts/api_errors.ml), raised where xapi raises them.
 */
export const CODES_OUTSIDE_THE_DATAMODEL = {
  /** An operation other than those a snapshot allows, on a snapshot (xapi_vm_lifecycle.ml). */
  VM_IS_SNAPSHOT: ['vm', 'operation'],
  /** VM.revert of a VM that is not a snapshot (xapi_vm_lifecycle.ml). */
  REVERT_ONLY_ALLOWED_ON_SNAPSHOT: [],
  /** An image that cannot be read or written in a VDI transfer (stream_vdi.ml, vhd_tool_wrapper.ml). */
  VDI_IO_ERROR: ['message'],
} as const satisfies Record<string, readonly string[]>

/** Every code a XapiError may carry: SM drivers' numbered failures too, as xapi relays them (storage_utils.ml). */
export type ErrorCode = DatamodelErrorCode | keyof typeof CODES_OUTSIDE_THE_DATAMODEL | `SR_BACKEND_FAILURE_${number}`

export class XapiError extends Error {
  readonly code: ErrorCode
  readonly params: string[]

  constructor(code: ErrorCode, params: unknown[] = []) {
    super(`${code}(${params.map(String).join(', ')})`)
    this.code = code
    this.params = params.map(String)
  }

  /** A failure another process raised and sent us, passed on with its code as it came. */
  static relayed(code: string, params: unknown[] = []): XapiError {
    return new XapiError(code as ErrorCode, params)
  }

  get description(): string[] {
    return [this.code, ...this.params]
  }
}

/** Any thrown value as a XenAPI failure: unexpected exceptions become INTERNAL_ERROR. */
export function asXapiError(err: unknown): XapiError {
  if (err instanceof XapiError) return err
  return new XapiError('INTERNAL_ERROR', [err instanceof Error ? err.message : String(err)])
}
