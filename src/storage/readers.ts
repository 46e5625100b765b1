// Images being read by an export, by path. A garbage collection never merges into them (a
// merge rewrites the image it merges into, in place, under the reader's feet); it deletes them
// if nothing needs them (a reader keeps its open file) and merges them once the reader is done.

const readers = new Map<string, number>()

/** Marks the images as read until the returned release is called (once). */
export function pinImages(paths: readonly string[]): () => void {
  for (const p of paths) readers.set(p, (readers.get(p) ?? 0) + 1)
  let released = false
  return () => {
    if (released) return
    released = true
    for (const p of paths) {
      const n = (readers.get(p) ?? 1) - 1
      if (n > 0) readers.set(p, n)
      else readers.delete(p)
    }
  }
}

export const isPinned = (path: string): boolean => readers.has(path)
