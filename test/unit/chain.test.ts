import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { chainDepth, freezePlan, inUse, nextGcAction, type ImageNode } from '../../src/storage/chain.js'

/** Applies GC decisions until the tree is healthy, as the agent does with real images. */
function normalise(images: ImageNode[], referenced: Set<string>): ImageNode[] {
  let tree = images.map((i) => ({ ...i }))
  for (let step = 0; step < 100; step++) {
    const action = nextGcAction(tree, referenced)
    if (!action) return tree
    if (action.kind === 'delete') tree = tree.filter((i) => i.name !== action.name)
    else {
      tree = tree.filter((i) => i.name !== action.base)
      const child = tree.find((i) => i.name === action.child)!
      if (action.newBacking) child.backing = action.newBacking
      else delete child.backing
    }
  }
  throw new Error('GC did not converge')
}

describe('the image tree', () => {
  it('keeps every image a VDI names, and the bases they need', () => {
    const tree = [{ name: 's1' }, { name: 's2', backing: 's1' }, { name: 'live', backing: 's2' }]
    assert.equal(nextGcAction(tree, new Set(['s1', 's2', 'live'])), undefined)
  })

  it('deletes an unneeded leaf, then the base that leaf alone needed', () => {
    const tree = [{ name: 'base' }, { name: 'a', backing: 'base' }, { name: 'b', backing: 'base' }]
    const after = normalise(tree, new Set(['a']))
    assert.deepEqual(after, [{ name: 'a' }], 'b deleted, then base streamed into a')
  })

  it('merges a deleted snapshot in the middle of a chain', () => {
    const tree = [{ name: 's1' }, { name: 's2', backing: 's1' }, { name: 'live', backing: 's2' }]
    assert.deepEqual(nextGcAction(tree, new Set(['s1', 'live'])), { kind: 'stream', base: 's2', child: 'live', newBacking: 's1' })
    assert.deepEqual(normalise(tree, new Set(['s1', 'live'])), [{ name: 's1' }, { name: 'live', backing: 's1' }])
  })

  it('merges nothing into or out of an image an export reads, and deletes what nothing needs', () => {
    // The export read "old" (the disk); since then: snapshot, new overlay, snapshot deleted.
    const tree = [{ name: 'old' }, { name: 'disk', backing: 'old' }, { name: 'orphan' }]
    const read = new Set(['old'])
    const busy = inUse(tree, new Set())
    assert.deepEqual(nextGcAction(tree, new Set(['disk']), busy, read), { kind: 'delete', name: 'orphan' })
    assert.equal(nextGcAction(tree.slice(0, 2), new Set(['disk']), busy, read), undefined, 'no merge into the image being read')
    assert.equal(nextGcAction(tree.slice(0, 2), new Set(['disk']), busy, new Set(['disk'])), undefined, 'nor into its child when that is read')
    assert.deepEqual(nextGcAction(tree.slice(0, 2), new Set(['disk']), busy), { kind: 'stream', base: 'old', child: 'disk' }, 'once the export is done')
  })

  it('keeps a base with two children (a template and its clones)', () => {
    const tree = [{ name: 'base' }, { name: 'vm1', backing: 'base' }, { name: 'vm2', backing: 'base' }]
    assert.equal(nextGcAction(tree, new Set(['vm1', 'vm2'])), undefined)
  })

  it('bounds the depth by the snapshots kept, whatever the order of snapshot and delete', () => {
    let tree: ImageNode[] = [{ name: 'v0' }]
    let live = 'v0'
    const kept = new Set<string>()
    let seed = 7
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31)
    for (let i = 1; i <= 200; i++) {
      if (random() < 0.6 || kept.size === 0) {
        kept.add(live)
        const next = `v${i}`
        tree.push({ name: next, backing: live })
        live = next
      } else {
        const victim = [...kept][Math.floor(random() * kept.size)]!
        kept.delete(victim)
      }
      tree = normalise(tree, new Set([...kept, live]))
      assert.ok(chainDepth(tree, live) <= kept.size + 1, `depth ${chainDepth(tree, live)} with ${kept.size} snapshots`)
      assert.equal(tree.length, kept.size + 1, 'no image is left that nothing needs')
    }
  })
})

describe('the image tree under running VMs', () => {
  it('merges into a running disk, and leaves other merges in its chain for later', () => {
    const tree = [{ name: 's1' }, { name: 's2', backing: 's1' }, { name: 'live', backing: 's2' }]
    const busy = inUse(tree, new Set(['live']))
    assert.deepEqual(nextGcAction(tree, new Set(['s1', 'live']), busy), { kind: 'stream', base: 's2', child: 'live', newBacking: 's1' })
    assert.equal(nextGcAction(tree, new Set(['s2', 'live']), busy), undefined, 's1 into s2 waits until the VM stops')
    assert.deepEqual(nextGcAction(tree, new Set(['s2', 'live'])), { kind: 'stream', base: 's1', child: 's2' })
  })
})

describe('freezing an image for a snapshot or clone', () => {
  it('freezes an image with data of its own as it is, the VDI going on in the new overlay', () => {
    assert.deepEqual(freezePlan('disk', 'next', undefined, true), { frozen: 'disk', location: 'next' })
    assert.deepEqual(freezePlan('disk', 'next', 'base', true), { frozen: 'disk', location: 'next' })
  })

  it('lets the backing of an overlay nothing was written to stand for it: no new chain link', () => {
    assert.deepEqual(freezePlan('clone', 'next', 'template', false), { frozen: 'template', location: 'clone' })
  })

  it('freezes an empty image without backing as it is', () => {
    assert.deepEqual(freezePlan('blank', 'next', undefined, false), { frozen: 'blank', location: 'next' })
  })
})
