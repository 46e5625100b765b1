import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { classes, defaultRecord, getClass, parseDefault, parseType, relations, typeToString, canonicalEnum } from '../../src/idl/index.js'

describe('the datamodel', () => {
  it('parses every type expression xapi uses, and prints them back', () => {
    for (const text of ['VM ref set', '(string -> enum vm_operations) map', '(VM ref -> (string -> string) map) map', 'sr_stat record option', 'string set set', 'enum vm_power_state']) {
      assert.equal(typeToString(parseType(text)), text)
    }
    assert.deepEqual(parseType('an event batch'), { kind: 'eventBatch' })
    assert.throws(() => parseType('(string -> int'))
  })

  it('holds every class of XCP-ng 8.1 with complete field lists', () => {
    for (const name of ['pool', 'host', 'host_metrics', 'host_cpu', 'VM', 'VM_metrics', 'VM_guest_metrics', 'VBD', 'VDI', 'SR', 'PBD', 'SM', 'network', 'VIF', 'PIF', 'task', 'message', 'console', 'VTPM', 'session', 'event']) {
      assert.ok(classes.has(name), name)
    }
    const vm = getClass('VM')
    assert.equal(vm.fields.get('power_state')?.default, 'Halted')
    assert.equal(vm.fields.get('HVM_boot_policy')?.state, 'deprecated')
    assert.ok(vm.listable)
    assert.equal(getClass('session').listable, false)
    assert.equal(defaultRecord(vm).resident_on, 'OpaqueRef:NULL')
    assert.equal(Object.keys(defaultRecord(vm)).length, vm.fieldList.length)
  })

  it('converts xapi default notation into values', () => {
    assert.deepEqual(parseDefault('{"address" -> "localhost", "port" -> "27000"}', parseType('(string -> string) map')), { address: 'localhost', port: '27000' })
    assert.equal(parseDefault('0.', parseType('float')), 0)
    assert.equal(parseDefault('Null', parseType('VM ref')), 'OpaqueRef:NULL')
    assert.deepEqual(parseDefault('{}', parseType('string set')), [])
    assert.equal(parseDefault('""', parseType('string')), '')
  })

  it('knows the bound fields and marks them derived, never stored', () => {
    const vbds = relations.find((r) => r.setClass === 'VM' && r.setField === 'VBDs')
    assert.deepEqual(vbds && [vbds.refClass, vbds.refField], ['VBD', 'VM'])
    assert.ok(getClass('VM').fields.get('VBDs')?.derivedFrom)
    assert.ok(!getClass('VM').storedFields.some((f) => f.name === 'VBDs'))
    assert.ok(getClass('host').fields.get('resident_VMs')?.derivedFrom)
  })

  it('knows trailing parameter defaults and Async forms', () => {
    const login = getClass('session').messages.get('login_with_password')!
    assert.deepEqual(login.params.map((p) => 'default' in p), [false, false, true, true])
    assert.equal(getClass('VM').messages.get('clone')?.hasAsync, true)
    assert.equal(getClass('VM').messages.get('get_name_label')?.hasAsync, false)
    assert.equal(getClass('VM').messages.get('destroy')?.hasAsync, true)
  })

  it('matches enum values in any case', () => {
    assert.equal(canonicalEnum('vm_power_state', 'halted'), 'Halted')
    assert.equal(canonicalEnum('vm_power_state', 'exploded'), undefined)
  })
})
