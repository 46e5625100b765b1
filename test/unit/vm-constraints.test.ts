// xapi's checks of memory and vCPU settings (vm_memory_constraints.ml, xapi_vm.ml,
// xapi_vm_helpers.ml), and which of a control domain's operations it allows.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { buildRecord } from '../../src/idl/index.js'
import type { VMRecord, VmOperations } from '../../src/idl/records.js'
import { bootSettingsError, liveVcpusError, memoryConstraintError, memoryOf, nestedVirtStartError, pcpusError, vcpusAtStartupError, vcpusMaxError } from '../../src/xapi/vm-constraints.js'
import { allowedVmOperations, vmOperationError } from '../../src/xapi/vm-ops.js'

const MiB = 2 ** 20
const memory = (smin: number, dmin: number, dmax: number, smax: number) => ({ memory_static_min: smin * MiB, memory_dynamic_min: dmin * MiB, memory_target: dmin * MiB, memory_dynamic_max: dmax * MiB, memory_static_max: smax * MiB })
const vm = (fields: Partial<VMRecord> = {}) => buildRecord('VM', { ...memory(128, 256, 256, 256), VCPUs_max: 2, VCPUs_at_startup: 1, HVM_shadow_multiplier: 1, actions_after_crash: 'restart', domain_type: 'hvm', ...fields })
const error = (e: { description: string[] } | undefined) => e?.description

describe('memory constraints', () => {
  it('accept static_min ≤ dynamic_min ≤ dynamic_max ≤ static_max, and refuse any other order', () => {
    const v = vm()
    assert.equal(memoryConstraintError(v, memoryOf(v)), undefined)
    assert.equal(memoryConstraintError(v, { ...memoryOf(v), dynamic_min: 128 * MiB }), undefined, 'a balloon range')
    assert.deepEqual(error(memoryConstraintError(v, { ...memoryOf(v), static_max: -1 })), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'])
    assert.deepEqual(error(memoryConstraintError(v, { ...memoryOf(v), static_max: 200 * MiB })), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'], 'static_max below dynamic_max')
    assert.deepEqual(error(memoryConstraintError(v, { ...memoryOf(v), static_min: 300 * MiB })), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'])
    assert.deepEqual(error(memoryConstraintError(v, { ...memoryOf(v), dynamic_min: 256 * MiB, dynamic_max: 200 * MiB })), ['MEMORY_CONSTRAINT_VIOLATION_ORDER'])
  })

  it('pin a control domain and a nested-virt VM at static_max', () => {
    const dom0 = vm({ is_control_domain: true, ...memory(512, 512, 512, 512) })
    assert.equal(memoryConstraintError(dom0, memoryOf(dom0)), undefined)
    assert.deepEqual(error(memoryConstraintError(dom0, { ...memoryOf(dom0), dynamic_min: 256 * MiB })), ['MEMORY_CONSTRAINT_VIOLATION_MAXPIN', 'control domain'])
    const nested = vm({ platform: { 'nested-virt': 'true' } })
    assert.equal(memoryConstraintError(nested, memoryOf(nested)), undefined, 'static_min may stay below')
    assert.deepEqual(error(memoryConstraintError(nested, { ...memoryOf(nested), dynamic_min: 128 * MiB })), ['MEMORY_CONSTRAINT_VIOLATION_MAXPIN', 'nested virt'])
    assert.deepEqual(error(nestedVirtStartError(vm({ platform: { 'nested-virt': 'true' }, ...memory(128, 128, 256, 256) }))), ['MEMORY_CONSTRAINT_VIOLATION_MAXPIN', 'nested virt'])
    assert.equal(nestedVirtStartError(vm({ ...memory(128, 128, 256, 256) })), undefined)
  })
})

describe('vCPU settings', () => {
  const rule = 'VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max'

  it('refuse VCPUs_max below 1 or below VCPUs_at_startup', () => {
    assert.deepEqual(error(vcpusMaxError(vm(), 0)), ['INVALID_VALUE', rule, '0'])
    assert.deepEqual(error(vcpusMaxError(vm(), -1)), ['INVALID_VALUE', rule, '-1'])
    assert.deepEqual(error(vcpusMaxError(vm({ VCPUs_at_startup: 2 }), 1)), ['INVALID_VALUE', rule, '1'])
    assert.equal(vcpusMaxError(vm(), 4), undefined)
  })

  it('refuse VCPUs_at_startup below 1 or above VCPUs_max', () => {
    assert.deepEqual(error(vcpusAtStartupError(vm(), 3)), ['INVALID_VALUE', rule, '3'])
    assert.deepEqual(error(vcpusAtStartupError(vm(), 0)), ['INVALID_VALUE', rule, '0'])
    assert.equal(vcpusAtStartupError(vm(), 2), undefined)
  })

  it('bound a live vCPU count by VCPUs_max', () => {
    assert.deepEqual(error(liveVcpusError(vm(), 3)), ['INVALID_VALUE', 'VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max', '3'])
    assert.deepEqual(error(liveVcpusError(vm(), 0)), ['INVALID_VALUE', 'VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max', '0'])
    assert.equal(liveVcpusError(vm(), 2), undefined)
  })
})

describe('the settings VM.start refuses', () => {
  it('are checked in xapi\'s order with its error codes and parameters', () => {
    assert.equal(bootSettingsError(vm()), undefined)
    assert.deepEqual(error(bootSettingsError(vm({ VCPUs_max: 0, VCPUs_at_startup: 0 }))), ['INVALID_VALUE', 'VCPUs_max', '0'])
    assert.deepEqual(error(bootSettingsError(vm({ VCPUs_at_startup: 0 }))), ['INVALID_VALUE', 'VCPUs-at-startup', '0'])
    assert.deepEqual(error(bootSettingsError(vm({ VCPUs_at_startup: 3 }))), ['VALUE_NOT_SUPPORTED', 'VCPUs-at-startup', '3', 'value greater than VCPUs-max'])
    assert.deepEqual(error(bootSettingsError(vm(memory(512, 256, 256, 256)))), ['MEMORY_CONSTRAINT_VIOLATION'])
    assert.deepEqual(error(bootSettingsError(vm(memory(128, 256, 200, 256)))), ['MEMORY_CONSTRAINT_VIOLATION'])
    assert.deepEqual(error(bootSettingsError(vm({ HVM_shadow_multiplier: 0.5 }))), ['INVALID_VALUE', 'HVM_shadow_multiplier', '0.5'])
    assert.deepEqual(error(bootSettingsError(vm({ HVM_shadow_multiplier: 0 }))), ['INVALID_VALUE', 'HVM_shadow_multiplier', '0.'])
    assert.equal(error(bootSettingsError(vm({ actions_after_crash: 'rename_restart' })))?.[0], 'VALUE_NOT_SUPPORTED')
    assert.deepEqual(error(bootSettingsError(vm({ actions_after_crash: 'coredump_and_restart' }))), ['VALUE_NOT_SUPPORTED', 'VM.actions_after_crash', 'coredump_and_restart', 'cannot invoke a coredump of an HVM, PVH or PV-in-PVH domain'])
  })

  it('coerce a dynamic range outside the static one instead of refusing it', () => {
    assert.equal(bootSettingsError(vm(memory(128, 512, 512, 256))), undefined)
  })

  it('include more vCPUs than the host has CPUs, unless platform:vcpu-unrestricted', () => {
    assert.deepEqual(error(pcpusError(vm({ VCPUs_max: 8 }), 2)), ['HOST_NOT_ENOUGH_PCPUS', '8', '2'])
    assert.equal(pcpusError(vm({ VCPUs_max: 8, platform: { 'vcpu-unrestricted': 'true' } }), 2), undefined)
    assert.equal(pcpusError(vm({ VCPUs_max: 2 }), 2), undefined)
  })
})

describe('operations by power state', () => {
  it('keep static memory and VCPUs_max changes to Halted VMs, the dynamic range also Running', () => {
    const running = vm({ power_state: 'Running' })
    for (const op of ['changing_static_range', 'changing_memory_limits', 'changing_VCPUs'] as VmOperations[])
      assert.deepEqual(error(vmOperationError('r', running, op)), ['VM_BAD_POWER_STATE', 'r', 'halted', 'running'], op)
    assert.equal(vmOperationError('r', running, 'changing_dynamic_range'), undefined)
    assert.equal(vmOperationError('r', running, 'changing_VCPUs_live'), undefined)
    assert.deepEqual(error(vmOperationError('r', vm(), 'changing_VCPUs_live')), ['VM_BAD_POWER_STATE', 'r', 'running', 'halted'])
    assert.deepEqual(error(vmOperationError('r', vm({ platform: { 'nested-virt': 'true' } }), 'changing_dynamic_range')), ['VM_IS_USING_NESTED_VIRT', 'r'])
  })

  it('let a running control domain change its memory, and nothing of its life cycle', () => {
    const dom0 = vm({ is_control_domain: true, power_state: 'Running' })
    assert.equal(vmOperationError('d', dom0, 'changing_static_range'), undefined)
    assert.equal(vmOperationError('d', dom0, 'changing_memory_limits'), undefined)
    assert.deepEqual(error(vmOperationError('d', dom0, 'changing_VCPUs')), ['OPERATION_NOT_ALLOWED', 'This operation is not allowed on dom0'])
    assert.deepEqual(error(vmOperationError('d', dom0, 'destroy')), ['VM_BAD_POWER_STATE', 'd', 'halted, suspended', 'running'])
    for (const op of ['clean_shutdown', 'hard_shutdown', 'hard_reboot', 'suspend', 'snapshot', 'pause', 'changing_VCPUs_live'] as VmOperations[])
      assert.deepEqual(error(vmOperationError('d', dom0, op)), ['OPERATION_NOT_ALLOWED', 'This operation is not allowed on a control domain'], op)
    assert.deepEqual(allowedVmOperations('d', dom0).sort(), ['changing_dynamic_range', 'changing_static_range', 'metadata_export'])
  })
})
