// The names and addresses of a lab's hosts (test/helpers/lab.ts): within the kernel's limits, and
// never shared between two labs, which tests run side by side.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { labLayout } from '../helpers/lab.js'

/** IFNAMSIZ is 16 with the terminating NUL. */
const MAX_INTERFACE_NAME = 15

test("a lab's interface names fit the kernel's limit, even for the last lab and many hosts", () => {
  const last = labLayout(254, 200)
  const names = [last.rootLink, ...last.hosts.map((h) => h.switchPort), last.storage.switchPort, last.storage.netns, 'eth0', 'root', 'br0']
  assert.deepEqual(names.filter((n) => n.length > MAX_INTERFACE_NAME), [])
})

test('two labs share no namespace, interface of the root namespace, address or directory', () => {
  const [a, b] = [labLayout(1, 3), labLayout(2, 3)]
  const owned = (l: typeof a) => [l.switchNetns, l.rootLink, l.rootAddress, l.dir, l.storage.netns, l.storage.address, ...l.hosts.flatMap((h) => [h.netns, h.address])]
  assert.deepEqual(owned(a).filter((x) => owned(b).includes(x)), [])
  assert.equal(new Set(owned(a)).size, owned(a).length)
})

test('hosts are numbered from 1, with their address on the lab subnet', () => {
  const l = labLayout(0, 3)
  assert.deepEqual(l.hosts.map((h) => [h.index, h.hostname, h.netns, h.address]), [
    [1, 'h1', 'flab0-h1', '10.213.0.11'],
    [2, 'h2', 'flab0-h2', '10.213.0.12'],
    [3, 'h3', 'flab0-h3', '10.213.0.13'],
  ])
  assert.equal(l.rootAddress, '10.213.0.1')
  assert.deepEqual(l.storage, { netns: 'flab0-st', switchPort: 'st', address: '10.213.0.5' })
})
