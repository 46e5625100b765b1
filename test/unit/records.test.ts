// The datamodel's TypeScript types: the generated file is current, error codes are checked at
// compile time, database calls are typed by class, and record builders fill the defaults.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildRecord, constructorArgs, EPOCH, errors, NULL_REF, storedFields } from '../../src/idl/index.js'
import { CODES_OUTSIDE_THE_DATAMODEL, XapiError } from '../../src/idl/errors.js'
import { renderRecords } from '../../src/idl/render-records.js'
import type { Tx } from '../../src/db/database.js'
import { memoryDatabase } from '../helpers/memory-db.js'
import { CLONE_RESETS, deviceCopy, diskVbd, IMPORT_RESETS, SNAPSHOT_RESETS } from '../../src/xapi/vm-copies.js'

const ROOT = join(import.meta.dirname, '..', '..', '..')

test('src/idl/records.ts is what the datamodel says (npm run gen-records)', () => {
  assert.equal(readFileSync(join(ROOT, 'src', 'idl', 'records.ts'), 'utf8'), renderRecords())
})

test('XapiError takes only known codes; the codes outside the datamodel are not in it', () => {
  assert.equal(new XapiError('SR_HAS_NO_PBDS', ['OpaqueRef:x']).code, 'SR_HAS_NO_PBDS')
  // @ts-expect-error: not an error code of the datamodel nor of the list outside it
  assert.equal(new XapiError('SR_NO_PBDS').code, 'SR_NO_PBDS')
  for (const code of Object.keys(CODES_OUTSIDE_THE_DATAMODEL)) assert.equal(errors.has(code), false, code)
  assert.deepEqual(new XapiError('VM_IS_SNAPSHOT', ['OpaqueRef:v', 'start']).description, ['VM_IS_SNAPSHOT', 'OpaqueRef:v', 'start'])
})

test('a built record has every field at its default but those given', () => {
  const vbd = buildRecord('VBD', { userdevice: '1', bootable: true })
  assert.equal(vbd.userdevice, '1')
  assert.equal(vbd.bootable, true)
  assert.equal(vbd.VM, NULL_REF)
  assert.equal(vbd.mode, 'RO')
  assert.deepEqual(vbd.other_config, {})
  assert.equal(vbd.status_code, 0)
  const vm = buildRecord('VM')
  assert.equal(vm.power_state, 'Halted')
  assert.equal(vm.snapshot_time, EPOCH)
  assert.deepEqual(vm.VBDs, [])
  assert.deepEqual(buildRecord('VM').other_config, {}, 'each record has maps of its own')
  assert.ok(!Object.hasOwn(storedFields('VM', vm), 'VBDs'), 'stored fields leave out the derived set fields')
})

test('a constructor takes the RW and RO/constructor fields given, nothing else', () => {
  const given = { uuid: 'u', VM: 'OpaqueRef:v', userdevice: '1', current_operations: { t: 'attach' }, not_a_field: 1 }
  assert.deepEqual(constructorArgs('VBD', given), { VM: 'OpaqueRef:v', userdevice: '1' })
})

test('records read through the database are typed by class, derived set fields included', () => {
  const db = memoryDatabase()
  const vm = db.transact((tx) => tx.create('VM', { name_label: 'a', memory_static_max: 2 ** 30 }))
  const vbd = db.transact((tx) => tx.create('VBD', { VM: vm, userdevice: '0' }))
  const rec = db.transact((tx) => tx.get('VM', vm))
  const vbds: string[] = rec.VBDs
  assert.deepEqual(vbds, [vbd])
  const size: number | bigint = rec.memory_static_max
  assert.equal(size, 2 ** 30)
  assert.equal(db.transact((tx) => tx.get('VBD', vbd).VM), vm)
})

test('a device copied for another VM drops its uuid and its runtime state; a disk VBD is read-write', () => {
  const original = buildRecord('VBD', { uuid: 'u', VM: 'OpaqueRef:a', VDI: 'OpaqueRef:d', userdevice: '2', currently_attached: true, current_operations: { t: 'attach' }, other_config: { k: 'v' } })
  const copy = deviceCopy('VBD', original, { VM: 'OpaqueRef:b' })
  assert.equal(copy.uuid, undefined)
  assert.deepEqual({ VM: copy.VM, VDI: copy.VDI, userdevice: copy.userdevice, other_config: copy.other_config }, { VM: 'OpaqueRef:b', VDI: 'OpaqueRef:d', userdevice: '2', other_config: { k: 'v' } })
  assert.deepEqual({ attached: copy.currently_attached, ops: copy.current_operations }, { attached: false, ops: {} })
  assert.deepEqual(diskVbd('OpaqueRef:v', 'OpaqueRef:d', '1', { bootable: true }), { VM: 'OpaqueRef:v', VDI: 'OpaqueRef:d', userdevice: '1', device: 'xvdb', mode: 'RW', type: 'Disk', empty: false, bootable: true })
})

test('every copy of a VM leaves where and how the original runs behind', () => {
  for (const resets of [CLONE_RESETS, SNAPSHOT_RESETS, IMPORT_RESETS]) {
    assert.equal(resets.resident_on, NULL_REF)
    assert.deepEqual(resets.current_operations, {})
  }
  assert.equal(SNAPSHOT_RESETS.is_a_snapshot, true)
  assert.equal(CLONE_RESETS.is_a_snapshot, false)
})

/** Never run: what the compiler refuses in transactions. */
export function refusedAtCompileTime(tx: Tx, ref: string): void {
  // @ts-expect-error: VM has no such field
  tx.update('VM', ref, { not_a_field: 1 })
  // @ts-expect-error: a derived set field is not stored
  tx.update('VM', ref, { VBDs: [] })
  // @ts-expect-error: not a vm_power_state
  tx.update('VM', ref, { power_state: 'Stopped' })
  // @ts-expect-error: name_label is a string
  tx.create('VM', { name_label: 1 })
}
