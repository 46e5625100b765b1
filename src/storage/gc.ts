// Runs the image-tree normalisation of a file SR (chain.ts decides, this acts), one SR at a time.
import { inUse, nextGcAction, type GcAction } from './chain.js'
import { isPinned } from './readers.js'
import type { FileSr } from './file-sr.js'

/** Streams into an image a running VM writes to (through its QEMU); false if no running VM does. */
export type LiveStream = (child: string, newBacking: string | undefined) => Promise<boolean>

const running = new Map<string, Promise<GcOutcome>>()

/** What a collection did, and whether it left merges for after the exports reading their images. */
export interface GcOutcome {
  done: GcAction[]
  deferred: boolean
}

/** Normalises the SR's tree; concurrent requests for one SR share one run that starts after the last. */
export function collectGarbage(sr: FileSr, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: LiveStream): Promise<GcOutcome> {
  const previous = running.get(sr.dir) ?? Promise.resolve({ done: [], deferred: false })
  const next = previous.catch(() => undefined).then(() => normalise(sr, referenced, liveTops, live))
  running.set(sr.dir, next)
  return next
}

async function normalise(sr: FileSr, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: LiveStream): Promise<GcOutcome> {
  const done: GcAction[] = []
  for (;;) {
    const tree = await sr.tree()
    const busy = inUse(tree, liveTops)
    const read = new Set(tree.filter((i) => isPinned(sr.path(i.name))).map((i) => i.name))
    const action = nextGcAction(tree, referenced, busy, read)
    if (!action) return { done, deferred: read.size > 0 && nextGcAction(tree, referenced, busy) !== undefined }
    if (action.kind === 'stream' && !(await live(action.child, action.newBacking))) await sr.mergeOffline(action.base, action.child)
    // The base goes only once its child no longer needs it (a crash before this point just repeats the stream).
    await sr.removeImage(action.kind === 'delete' ? action.name : action.base)
    done.push(action)
  }
}
