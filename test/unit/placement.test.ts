// Placement (src/xapi/placement.ts): which hosts a VM may boot on, the error a host gives, and
// the one VM.start picks, on tables of pools; no database, no I/O.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { getClass } from '../../src/idl/index.js'
import type { VMRecord } from '../../src/idl/records.js'
import { chooseHost, freeMemory, hostRefusal, possibleHosts, VM_OVERHEAD, type BootNeeds, type HostState } from '../../src/xapi/placement.js'

const GiB = 2 ** 30

/** A VM record at the datamodel's defaults, with what a test changes. */
function vmRecord(fields: Partial<VMRecord>): Readonly<VMRecord> {
  const defaults = Object.fromEntries(getClass('VM').storedFields.map((f) => [f.name, structuredClone(f.default)]))
  return { ...defaults, VCPUs_max: 1, VCPUs_at_startup: 1, ...fields } as VMRecord
}

const needs = (memory: number, srs: string[] = [], fields: Partial<VMRecord> = {}): BootNeeds => ({
  ref: 'OpaqueRef:vm',
  vm: vmRecord({ memory_static_max: memory - VM_OVERHEAD, ...fields }),
  srs,
})

const host = (ref: string, fields: Partial<HostState> = {}): HostState => ({ ref, live: true, enabled: true, freeMemory: 8 * GiB, cpus: 4, srs: new Set(['local-' + ref, 'shared']), ...fields })

const code = (err: { code: string; params: unknown[] } | undefined) => (err ? [err.code, ...err.params.map(String)] : undefined)

describe('free memory', () => {
  it('is the RAM less the static maximum of each VM resident or scheduled, with QEMU overhead except for the control domain', () => {
    const dom0 = { memory_static_max: 2 * GiB, is_control_domain: true }
    const guest = { memory_static_max: 1 * GiB, is_control_domain: false }
    assert.equal(freeMemory(16 * GiB, []), 16 * GiB)
    assert.equal(freeMemory(16 * GiB, [dom0]), 14 * GiB)
    assert.equal(freeMemory(16 * GiB, [dom0, guest, guest]), 12 * GiB - 2 * VM_OVERHEAD)
    assert.equal(freeMemory(1 * GiB, [dom0]), 0, 'never below zero')
  })
})

describe('the refusal of one host, in xapi order', () => {
  const vm = needs(2 * GiB, ['shared', 'local-a'])
  const cases: [string, HostState, BootNeeds, string[] | undefined][] = [
    ['a host that fits', host('a'), vm, undefined],
    ['not live comes first', host('a', { live: false, enabled: false, freeMemory: 0 }), vm, ['HOST_NOT_LIVE']],
    ['disabled', host('a', { enabled: false, freeMemory: 0 }), vm, ['HOST_DISABLED', 'a']],
    ['an SR it does not see, the first missing', host('b', { freeMemory: 0 }), vm, ['VM_REQUIRES_SR', 'OpaqueRef:vm', 'local-a']],
    ['too little memory: needed, available', host('a', { freeMemory: GiB }), vm, ['HOST_NOT_ENOUGH_FREE_MEMORY', String(2 * GiB), String(GiB)]],
    ['exactly enough memory', host('a', { freeMemory: 2 * GiB }), vm, undefined],
    ['too few CPUs', host('a', { cpus: 2 }), needs(GiB, [], { VCPUs_max: 3 }), ['HOST_NOT_ENOUGH_PCPUS', '3', '2']],
    ['a control domain on a disabled host', host('a', { enabled: false }), needs(GiB, [], { is_control_domain: true }), undefined],
    ['a VM with no disks on a host with no SRs', host('a', { srs: new Set() }), needs(GiB), undefined],
  ]
  for (const [name, h, n, expected] of cases) it(name, () => assert.deepEqual(code(hostRefusal(n, h)), expected))

  it('without the capacity checks, memory and CPUs do not count', () => {
    assert.equal(hostRefusal(needs(4 * GiB, [], { VCPUs_max: 16 }), host('a', { freeMemory: 0 }), { capacity: false }), undefined)
    assert.deepEqual(code(hostRefusal(vm, host('a', { enabled: false }), { capacity: false })), ['HOST_DISABLED', 'a'])
  })
})

describe('the hosts a VM can boot on and the one VM.start picks', () => {
  const pool = [
    host('a', { freeMemory: 4 * GiB }),
    host('b', { freeMemory: 6 * GiB }),
    host('c', { freeMemory: 12 * GiB, live: false }),
    host('d', { freeMemory: 10 * GiB, enabled: false }),
    host('e', { freeMemory: 9 * GiB, srs: new Set(['local-e']) }),
  ]
  const cases: [string, BootNeeds, string[], string | undefined][] = [
    ['the most free memory among the live, enabled hosts seeing its SRs', needs(GiB, ['shared']), ['a', 'b'], 'b'],
    ['no disks: every live, enabled host', needs(GiB), ['a', 'b', 'e'], 'e'],
    ['its affinity host when that can take it, though another has more room', needs(GiB, ['shared'], { affinity: 'a' }), ['a', 'b'], 'a'],
    ['not its affinity host when that is disabled', needs(GiB, [], { affinity: 'd' }), ['a', 'b', 'e'], 'e'],
    ['a local SR pins it to its host', needs(GiB, ['local-a']), ['a'], 'a'],
    ['only the host with room', needs(5 * GiB, ['shared']), ['b'], 'b'],
    ['none with room: the roomiest that passes the rest, to fail there on memory', needs(7 * GiB, ['shared']), [], 'b'],
    ['none seeing its SRs', needs(GiB, ['local-c']), [], undefined],
    ['an SR plugged nowhere', needs(GiB, ['elsewhere']), [], undefined],
  ]
  for (const [name, n, possible, chosen] of cases)
    it(name, () => {
      assert.deepEqual(possibleHosts(n, pool), possible)
      assert.equal(chooseHost(n, pool), chosen)
    })

  it('ties go to the first host given', () => {
    assert.equal(chooseHost(needs(GiB), [host('x'), host('y')]), 'x')
  })

  it('no hosts: none', () => {
    assert.equal(chooseHost(needs(GiB), []), undefined)
  })
})
