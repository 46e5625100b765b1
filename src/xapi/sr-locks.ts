// The SR locks: what keeps an SR's image tree from changing under an operation that reads or
// builds on it. They pair the agent's work on images with the database records naming them, so
// they live on the API side; today in this process (each SR has its one host), with shared SRs
// they become pool-wide.

const srLocks = new Map<string, Promise<unknown>>()

/**
 * Runs `fn` alone among the SR's tree changes: freezing images (snapshot, clone) and garbage
 * collection must not interleave, or a collection could remove an image a new snapshot needs.
 */
export function withSrLock<T>(srRef: string, fn: () => Promise<T>): Promise<T> {
  const previous = srLocks.get(srRef) ?? Promise.resolve()
  const next = previous.catch(() => undefined).then(fn)
  srLocks.set(srRef, next)
  return next
}

/**
 * Runs `fn` while no garbage collection, snapshot or clone touches these SRs: for whatever
 * opens their images (a VM starting, a disk transfer). Locks are taken in one order.
 */
export function withSrLocks<T>(srRefs: string[], fn: () => Promise<T>): Promise<T> {
  const [first, ...rest] = [...new Set(srRefs)].sort()
  return first === undefined ? fn() : withSrLock(first, () => withSrLocks(rest, fn))
}
