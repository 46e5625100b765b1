// A XenAPI failure: an error code of the datamodel and its parameters, all strings on the wire.
export class XapiError extends Error {
  readonly code: string
  readonly params: string[]

  constructor(code: string, params: unknown[] = []) {
    super(`${code}(${params.map(String).join(', ')})`)
    this.code = code
    this.params = params.map(String)
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
