// xapi's checks of a VM's memory and vCPU settings, as pure functions of its record: the
// ones its setters make (vm_memory_constraints.ml, xapi_vm.ml) and the ones VM.start makes
// before it boots anything (xapi_vm_helpers.ml validate_basic_parameters, assert_enough_pcpus).
import { XapiError } from '../idl/errors.js'
import type { VMRecord } from '../idl/records.js'

type Rec = Readonly<VMRecord>

/** The five memory settings, in the order static_min ≤ dynamic_min ≤ target ≤ dynamic_max ≤ static_max. */
export interface MemoryConstraints {
  static_min: number
  dynamic_min: number
  target: number
  dynamic_max: number
  static_max: number
}

export function memoryOf(vm: Rec): MemoryConstraints {
  return {
    static_min: Number(vm.memory_static_min),
    dynamic_min: Number(vm.memory_dynamic_min),
    target: Number(vm.memory_target),
    dynamic_max: Number(vm.memory_dynamic_max),
    static_max: Number(vm.memory_static_max),
  }
}

const inOrder = (c: MemoryConstraints) => c.static_min <= c.dynamic_min && c.dynamic_min <= c.dynamic_max && c.dynamic_max <= c.static_max
const pinnedAtStaticMax = (c: MemoryConstraints) => c.static_min <= c.dynamic_min && c.dynamic_min === c.dynamic_max && c.dynamic_max === c.static_max

const isTrue = (platform: Record<string, string>, key: string) => ['1', 'true'].includes((platform[key] ?? '').toLowerCase())

/** platform:nested-virt: xapi pins such a VM's memory and refuses to balloon it. */
export const usesNestedVirt = (vm: Rec) => isTrue(vm.platform, 'nested-virt')

/**
 * Whether new memory settings may be stored on `vm` (assert_valid_for_current_context): in
 * order, and pinned at static_max for a control domain or a nested-virt VM. Dynamic memory
 * control is a feature every XCP-ng pool has, so it is never the reason.
 */
export function memoryConstraintError(vm: Rec, c: MemoryConstraints): XapiError | undefined {
  const pinReason = vm.is_control_domain ? 'control domain' : usesNestedVirt(vm) ? 'nested virt' : undefined
  if (pinReason) return pinnedAtStaticMax(c) ? undefined : new XapiError('MEMORY_CONSTRAINT_VIOLATION_MAXPIN', [pinReason])
  return inOrder(c) ? undefined : new XapiError('MEMORY_CONSTRAINT_VIOLATION_ORDER')
}

/** The rule the vCPU setters state in their INVALID_VALUE. */
const VCPU_RULE = 'VCPU values must satisfy: 0 < VCPUs_at_startup ≤ VCPUs_max'

export function vcpusMaxError(vm: Rec, value: number): XapiError | undefined {
  return value < 1 || value < Number(vm.VCPUs_at_startup) ? new XapiError('INVALID_VALUE', [VCPU_RULE, String(value)]) : undefined
}

export function vcpusAtStartupError(vm: Rec, value: number): XapiError | undefined {
  return value < 1 || value > Number(vm.VCPUs_max) ? new XapiError('INVALID_VALUE', [VCPU_RULE, String(value)]) : undefined
}

/** VM.set_VCPUs_number_live's bound (xenopsd's Invalid_vcpus, as xapi reports it). */
export function liveVcpusError(vm: Rec, value: number): XapiError | undefined {
  return value < 1 || value > Number(vm.VCPUs_max) ? new XapiError('INVALID_VALUE', ['VCPU values must satisfy: 0 < VCPUs ≤ VCPUs_max', String(value)]) : undefined
}

/**
 * Whether the dynamic range can be brought inside the static one (Vm_memory_constraints.transform):
 * VM.start accepts settings it can coerce, and refuses only maxima below their minima.
 */
const coercible = (c: MemoryConstraints) => c.static_min <= c.static_max && c.dynamic_min <= c.dynamic_max

/** OCaml's string_of_float, which xapi's messages print floats with ("1." and "0.5"). */
const ocamlFloat = (x: number) => (Number.isInteger(x) ? `${x}.` : String(x))

/** validate_basic_parameters: the settings VM.start refuses to boot with, in xapi's order. */
export function bootSettingsError(vm: Rec): XapiError | undefined {
  const max = Number(vm.VCPUs_max)
  const atStartup = Number(vm.VCPUs_at_startup)
  if (max < 1) return new XapiError('INVALID_VALUE', ['VCPUs_max', String(max)])
  if (atStartup < 1) return new XapiError('INVALID_VALUE', ['VCPUs-at-startup', String(atStartup)])
  if (atStartup > max) return new XapiError('VALUE_NOT_SUPPORTED', ['VCPUs-at-startup', String(atStartup), 'value greater than VCPUs-max'])
  // xapi raises this one without the parameter the datamodel declares.
  if (!coercible(memoryOf(vm))) return new XapiError('MEMORY_CONSTRAINT_VIOLATION')
  const multiplier = vm.HVM_shadow_multiplier
  if (multiplier < 1) return new XapiError('INVALID_VALUE', ['HVM_shadow_multiplier', ocamlFloat(multiplier)])
  const crash = vm.actions_after_crash
  if (crash === 'rename_restart') return new XapiError('VALUE_NOT_SUPPORTED', ['VM.actions_after_crash', crash, 'option would leak a domain; VMs and not domains are managed by this API'])
  if ((crash === 'coredump_and_destroy' || crash === 'coredump_and_restart') && vm.domain_type !== 'pv')
    return new XapiError('VALUE_NOT_SUPPORTED', ['VM.actions_after_crash', crash, 'cannot invoke a coredump of an HVM, PVH or PV-in-PVH domain'])
  return undefined
}

/** assert_enough_pcpus: more vCPUs than the host has CPUs only with platform:vcpu-unrestricted. */
export function pcpusError(vm: Rec, hostCpus: number): XapiError | undefined {
  const vcpus = Number(vm.VCPUs_max)
  if (vcpus <= hostCpus || isTrue(vm.platform, 'vcpu-unrestricted')) return undefined
  return new XapiError('HOST_NOT_ENOUGH_PCPUS', [String(vcpus), String(hostCpus)])
}

/** VM.start's extra check of a nested-virt VM (xapi_vm.ml assert_memory_constraints). */
export function nestedVirtStartError(vm: Rec): XapiError | undefined {
  if (!usesNestedVirt(vm) || pinnedAtStaticMax(memoryOf(vm))) return undefined
  return new XapiError('MEMORY_CONSTRAINT_VIOLATION_MAXPIN', ['nested virt'])
}
