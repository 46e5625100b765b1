// Runs the image-tree normalisation of a file SR (chain.ts decides, this acts), one SR at a time.
import { rm } from 'node:fs/promises'
import { inUse, nextGcAction, type GcAction } from './chain.js'
import type { FileSr } from './file-sr.js'

/** Streams into an image a running VM writes to (through its QEMU); false if no running VM does. */
export type LiveStream = (child: string, newBacking: string | undefined) => Promise<boolean>

const running = new Map<string, Promise<GcAction[]>>()

/** Normalises the SR's tree; concurrent requests for one SR share one run that starts after the last. */
export function collectGarbage(sr: FileSr, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: LiveStream): Promise<GcAction[]> {
  const previous = running.get(sr.dir) ?? Promise.resolve([])
  const next = previous.catch(() => []).then(() => normalise(sr, referenced, liveTops, live))
  running.set(sr.dir, next)
  return next
}

async function normalise(sr: FileSr, referenced: ReadonlySet<string>, liveTops: ReadonlySet<string>, live: LiveStream): Promise<GcAction[]> {
  const done: GcAction[] = []
  for (;;) {
    const tree = await sr.tree()
    const action = nextGcAction(tree, referenced, inUse(tree, liveTops))
    if (!action) return done
    if (action.kind === 'stream' && !(await live(action.child, action.newBacking))) await sr.mergeOffline(action.base, action.child)
    // The base goes only once its child no longer needs it (a crash before this point just repeats the stream).
    await rm(sr.path(action.kind === 'delete' ? action.name : action.base), { force: true })
    done.push(action)
  }
}
