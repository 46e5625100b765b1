// VM actions as the UI offers them, each an Async. call watched to its end.
import { NULL_REF } from './api'
import { act, ask, call, get, hosts, isLive, master, objects, run, srs, pool, type Rec } from './store'
import { go } from './router'

export interface Action {
  id: string
  label: string
  /** The allowed_operations entry that enables it. */
  op: string
  run(vm: Rec): Promise<unknown>
}

const simple = (id: string, label: string, op: string, method: string, ...extra: unknown[]): Action => ({ id, label, op, run: (vm) => act(`VM.${method}`, vm.$ref, ...extra) })

export const POWER_ACTIONS: Action[] = [
  simple('start', 'Start', 'start', 'start', false, false),
  simple('shutdown', 'Shut down', 'clean_shutdown', 'clean_shutdown'),
  simple('hard_shutdown', 'Force shutdown', 'hard_shutdown', 'hard_shutdown'),
  simple('reboot', 'Reboot', 'clean_reboot', 'clean_reboot'),
  simple('hard_reboot', 'Force reboot', 'hard_reboot', 'hard_reboot'),
  simple('suspend', 'Suspend', 'suspend', 'suspend'),
  simple('resume', 'Resume', 'resume', 'resume', false, false),
  simple('pause', 'Pause', 'pause', 'pause'),
  simple('unpause', 'Unpause', 'unpause', 'unpause'),
]

/** Start on a host the user picks (VM.start_on); only the hosts that can take a VM are offered. */
export async function startOn(vm: Rec): Promise<void> {
  const candidates = hosts.value.filter((h) => isLive(h) && h.enabled)
  const options = candidates.map((h) => ({ value: h.$ref, label: h.$ref === master.value?.$ref ? `${h.name_label} (master)` : h.name_label }))
  const v = await ask({ title: `Start ${vm.name_label} on…`, message: 'Hosts that are disabled or not live are not offered.', fields: [{ key: 'host', label: 'Host', type: 'select', value: options[0]?.value ?? '', options }], confirm: 'Start' })
  if (v?.host) await run(`Start ${vm.name_label}`, () => act('VM.start_on', vm.$ref, v.host, false, false))
}

export const allowed = (vm: Rec, op: string) => (vm.allowed_operations as string[]).includes(op)

/** The disks (VDIs) attached to a VM as Disk VBDs. */
export const diskVdis = (vm: Rec): string[] =>
  (vm.VBDs as string[]).map((b) => get('vbd', b)).filter((b) => b && b.type === 'Disk' && b.VDI !== NULL_REF).map((b) => b!.VDI as string)

/** Destroys a VM (or snapshot), its snapshots, and the disks only they use, as XO does. */
export async function destroyVm(vm: Rec): Promise<void> {
  for (const snap of (vm.snapshots as string[] | undefined) ?? []) {
    const rec = get('vm', snap)
    if (rec) await destroyVm(rec)
  }
  const vdis = diskVdis(vm).filter((vdi) => ((get('vdi', vdi)?.VBDs as string[] | undefined) ?? []).every((b) => get('vbd', b)?.VM === vm.$ref))
  await act('VM.destroy', vm.$ref)
  for (const vdi of vdis) await act('VDI.destroy', vdi)
}

export async function confirmDelete(list: Rec[]): Promise<boolean> {
  const names = list.map((v) => v.name_label).join(', ')
  const ok = await ask({ title: list.length > 1 ? `Delete ${list.length} VMs?` : 'Delete VM?', message: `${names} and ${list.length > 1 ? 'their' : 'its'} disks and snapshots will be deleted. This cannot be undone.`, confirm: 'Delete', danger: true })
  if (!ok) return false
  for (const vm of list) await run(`Delete ${vm.name_label}`, () => destroyVm(vm))
  return true
}

export async function cloneVm(vm: Rec, copy: boolean): Promise<void> {
  const fields = [{ key: 'name', label: 'Name of the new VM', value: `${vm.name_label} (${copy ? 'copy' : 'clone'})` }]
  if (copy) fields.push({ key: 'sr', label: 'Storage', type: 'select', value: String(pool.value?.default_SR ?? ''), options: srs.value.filter((s) => s.content_type !== 'iso').map((s) => ({ value: s.$ref, label: s.name_label })) } as never)
  const v = await ask({ title: copy ? 'Copy VM (full copy of its disks)' : 'Clone VM (fast, thin copy)', fields, confirm: copy ? 'Copy' : 'Clone' })
  if (!v) return
  const [ref] = (await run(copy ? 'Copy' : 'Clone', () => (copy ? act('VM.copy', vm.$ref, v.name, v.sr) : act('VM.clone', vm.$ref, v.name)))) ?? []
  const made = ref && objects.vm[ref]
  if (made) go('vm', made.uuid)
}

export async function snapshot(vm: Rec, checkpoint: boolean): Promise<void> {
  const v = await ask({ title: checkpoint ? 'Checkpoint (disks and memory)' : 'Snapshot', fields: [{ key: 'name', label: 'Name', value: `${vm.name_label} ${new Date().toLocaleString()}` }], confirm: checkpoint ? 'Take checkpoint' : 'Take snapshot' })
  if (v) await run(checkpoint ? 'Checkpoint' : 'Snapshot', () => act(checkpoint ? 'VM.checkpoint' : 'VM.snapshot', vm.$ref, v.name))
}

export async function revert(snap: Rec): Promise<void> {
  const ok = await ask({ title: 'Revert to snapshot?', message: `The VM goes back to "${snap.name_label}"; changes since then are lost.`, confirm: 'Revert', danger: true })
  if (ok) await run('Revert', () => act('VM.revert', snap.$ref))
}

export async function deleteSnapshot(snap: Rec): Promise<void> {
  const ok = await ask({ title: 'Delete snapshot?', message: `"${snap.name_label}" and its disks will be deleted.`, confirm: 'Delete', danger: true })
  if (ok) await run('Delete snapshot', () => destroyVm(snap))
}

/** Sets memory to `size` (static max = dynamic min = dynamic max), in an order the constraints allow. */
export async function setMemory(vm: Rec, size: number): Promise<void> {
  const order = size > Number(vm.memory_static_max) ? ['static_max', 'dynamic_max', 'dynamic_min'] : ['dynamic_min', 'dynamic_max', 'static_max']
  for (const f of order) await call(`VM.set_memory_${f}`, vm.$ref, size)
}

export async function setVcpus(vm: Rec, n: number): Promise<void> {
  if (n > Number(vm.VCPUs_max)) await call('VM.set_VCPUs_max', vm.$ref, n), await call('VM.set_VCPUs_at_startup', vm.$ref, n)
  else await call('VM.set_VCPUs_at_startup', vm.$ref, n), await call('VM.set_VCPUs_max', vm.$ref, n)
}

export const BOOT_DEVICES: Record<string, string> = { c: 'Hard disk', d: 'CD/DVD', n: 'Network (PXE)' }

/** Adds a new disk: a VDI in `sr`, attached at the next free position. */
export async function addDisk(vm: Rec, sr: string, size: number, name: string): Promise<void> {
  const [vdi] = await act('VDI.create', { name_label: name, name_description: '', SR: sr, virtual_size: size, type: 'user', sharable: false, read_only: false, other_config: {}, xenstore_data: {}, sm_config: {}, tags: [] })
  const [device] = await call<string[]>('VM.get_allowed_VBD_devices', vm.$ref)
  await act('VBD.create', { VM: vm.$ref, VDI: vdi, userdevice: device, bootable: false, mode: 'RW', type: 'Disk', unpluggable: true, empty: false, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
}

/** Adds a CD drive, empty or with an ISO. */
export async function addCd(vm: Rec, iso: string): Promise<void> {
  const [device] = await call<string[]>('VM.get_allowed_VBD_devices', vm.$ref)
  await act('VBD.create', { VM: vm.$ref, VDI: iso || NULL_REF, userdevice: device, bootable: false, mode: 'RO', type: 'CD', unpluggable: true, empty: !iso, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {} })
}

export async function addVif(vm: Rec, network: string): Promise<void> {
  const [device] = await call<string[]>('VM.get_allowed_VIF_devices', vm.$ref)
  await act('VIF.create', { device, network, VM: vm.$ref, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] })
}

export const isoVdis = () => Object.values(objects.vdi).filter((v) => get('sr', v.SR as string)?.content_type === 'iso').sort((a, b) => String(a.name_label).localeCompare(String(b.name_label)))

export const BOOT_ORDERS = ['cd', 'dc', 'cdn', 'dcn', 'ncd', 'c', 'd', 'n']
export const bootLabel = (order: string) => [...order].map((c) => BOOT_DEVICES[c] ?? c).join(', then ')
