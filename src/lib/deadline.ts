// A bound on how long an answer may take, for calls to a peer that may have gone silent (a host
// cut off keeps a kept-alive connection open and answers nothing): the work itself is not stopped.
export function deadline<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms)
  })
  return Promise.race([work, late]).finally(() => clearTimeout(timer))
}
