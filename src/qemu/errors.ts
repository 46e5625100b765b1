// Errors QEMU and qemu-img report in words, turned into something callers can test for.

/** An image is open (and locked) by another QEMU or qemu-img, usually a VM still running on it. */
export class ImageLockedError extends Error {
  constructor(
    readonly imagePath: string | undefined,
    readonly detail: string,
  ) {
    super(`disk image ${imagePath ?? '(unknown)'} is in use by another process (it holds the image lock): ${detail}`)
    this.name = 'ImageLockedError'
  }
}

// QEMU says: `Failed to get "write" lock` and, on the next line, `Is another process using the image [/path]?`
const LOCK_RE = /Failed to get "(?:write|shared|consistent read)" lock/
const LOCKED_PATH_RE = /Is another process using the image \[([^\]\n]+)\]\?/

/** The lock error hidden in QEMU's output, if that is what failed. */
export function imageLockedError(output: string): ImageLockedError | undefined {
  const lock = LOCK_RE.exec(output)
  if (!lock) return undefined
  return new ImageLockedError(LOCKED_PATH_RE.exec(output)?.[1], lock[0])
}
