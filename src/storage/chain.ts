// The image tree of a file SR, and what keeps it healthy. Every VDI record names one image file;
// snapshots are read-only images that later images build on; images no VDI names are hidden
// bases. After any change the tree is normalised: a hidden base nothing builds on is deleted,
// and a hidden base with a single child is streamed into that child, so chains are never longer
// than the snapshots a user keeps, and space comes back as soon as nothing needs it.

export interface ImageNode {
  name: string
  /** The image this one is built on (its backing file), by name. */
  backing?: string
}

export type GcAction =
  | { kind: 'delete'; name: string }
  /** The child absorbs the base's data and then builds on the base's own backing (or on nothing). */
  | { kind: 'stream'; base: string; child: string; newBacking?: string }

/** Images running VMs use: the disks they write to (merges into those run inside QEMU) and every image below them. */
export interface InUse {
  tops: ReadonlySet<string>
  chains: ReadonlySet<string>
}

/** Every image a running disk reads through, the disk included. */
export function inUse(images: ImageNode[], tops: ReadonlySet<string>): InUse {
  const byName = new Map(images.map((i) => [i.name, i]))
  const chains = new Set<string>()
  for (const top of tops) for (let cur = byName.get(top); cur; cur = cur.backing ? byName.get(cur.backing) : undefined) chains.add(cur.name)
  return { tops, chains }
}

/**
 * The next step that normalises the tree, or undefined when it is healthy. A pure decision.
 * Merges inside a running VM's chain wait until it stops, except a merge into the disk the VM
 * writes to, which its QEMU does (block-stream); merges touching an image an export reads
 * (`read`) wait until it is done.
 */
export function nextGcAction(images: ImageNode[], referenced: ReadonlySet<string>, busy: InUse = { tops: new Set(), chains: new Set() }, read: ReadonlySet<string> = new Set()): GcAction | undefined {
  const children = new Map<string, string[]>()
  for (const img of images) if (img.backing) children.set(img.backing, [...(children.get(img.backing) ?? []), img.name])
  for (const img of images) {
    if (referenced.has(img.name)) continue
    const kids = children.get(img.name) ?? []
    if (kids.length === 0) return { kind: 'delete', name: img.name }
  }
  for (const img of images) {
    if (referenced.has(img.name)) continue
    const kids = children.get(img.name) ?? []
    const child = kids[0]
    if (kids.length !== 1 || !child) continue
    if (busy.chains.has(child) && !busy.tops.has(child)) continue
    // An image an export reads is not rewritten: neither merged into nor absorbing its base.
    if (read.has(img.name) || read.has(child)) continue
    return { kind: 'stream', base: img.name, child, ...(img.backing ? { newBacking: img.backing } : {}) }
  }
  return undefined
}

/** How many images a VDI's data goes through (itself included). */
export function chainDepth(images: ImageNode[], name: string): number {
  const byName = new Map(images.map((i) => [i.name, i]))
  let depth = 0
  for (let cur = byName.get(name); cur; cur = cur.backing ? byName.get(cur.backing) : undefined) depth++
  return depth
}

/**
 * How an image becomes immutable for a snapshot or clone. An overlay nothing was written to yet
 * holds no data of its own, so its backing (immutable already) stands for it and cloning a
 * template again and again adds no chain links; otherwise the image freezes as it is and the
 * VDI goes on in a fresh overlay `next` built on it.
 */
export function freezePlan(location: string, next: string, backing: string | undefined, ownData: boolean): { frozen: string; location: string } {
  return backing !== undefined && !ownData ? { frozen: backing, location } : { frozen: location, location: next }
}
