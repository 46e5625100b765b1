// Devices added to and removed from a running VM over QMP, named as the command line names
// them (argv.ts), so a hot-plugged disk looks like a cold-plugged one.
import { diskDeviceId, hotplugPortId, netdevId } from './argv.js'
import { addBlockNodes, removeBlockNodes } from './block-nodes.js'
import type { QemuDisk, QemuNic } from './config.js'
import type { QmpClient } from './qmp.js'
import { topNode } from './blockjobs.js'
import { withUndo } from '../lib/undo.js'

const NIC_DEVICES: Record<QemuNic['model'], string> = { virtio: 'virtio-net-pci', e1000: 'e1000', rtl8139: 'rtl8139' }

interface PciDevice {
  qdev_id?: string
  pci_bridge?: { devices?: PciDevice[] }
}

/** The first spare root port with nothing behind it. */
export async function freeHotplugPort(qmp: QmpClient, ports: number): Promise<number> {
  const buses = await qmp.execute<{ devices: PciDevice[] }[]>('query-pci')
  const devices = buses.flatMap((b) => b.devices)
  for (let i = 0; i < ports; i++) {
    const port = devices.find((d) => d.qdev_id === hotplugPortId(i))
    if (port && (port.pci_bridge?.devices ?? []).length === 0) return i
  }
  throw new Error('no free hot-plug port left on this VM (restart it to add more devices)')
}

/** Waits until the guest released a device we asked to remove (it may refuse, or take time). */
async function deviceGone(qmp: QmpClient, id: string, timeoutMs: number): Promise<void> {
  await qmp.waitForEvent('DEVICE_DELETED', (e) => e.data.device === id, timeoutMs)
}

/** A virtio or NVMe disk on a spare root port (hot-plug needs a PCI device). */
export async function attachDisk(qmp: QmpClient, disk: QemuDisk, port: number): Promise<void> {
  if (disk.bus !== 'virtio' && disk.bus !== 'nvme') throw new Error(`a ${disk.bus} disk cannot be hot-plugged`)
  await withUndo(`hot-plug of disk ${disk.node}`, async (undo) => {
    await addBlockNodes(qmp, undo, disk.node, disk.path!, disk.format, disk.readOnly)
    const model = disk.bus === 'virtio' ? 'virtio-blk-pci' : 'nvme'
    await qmp.execute('device_add', { driver: model, id: diskDeviceId(disk), drive: disk.node, bus: hotplugPortId(port), ...(disk.bus === 'nvme' ? { serial: disk.node } : {}) })
  })
}

export async function detachDisk(qmp: QmpClient, node: string, timeoutMs = 30_000): Promise<void> {
  const id = diskDeviceId({ node })
  // After live snapshots the device writes to a newer node than the one it was plugged with.
  const top = await topNode(qmp, node)
  const gone = deviceGone(qmp, id, timeoutMs)
  await qmp.execute('device_del', { id })
  await gone
  await removeBlockNodes(qmp, top)
  if (top !== node) await removeBlockNodes(qmp, node)
}

/** Puts a medium in a CD drive (empty or not): the drive's own node name holds the medium. */
export async function insertMedium(qmp: QmpClient, node: string, path: string, format: QemuDisk['format']): Promise<void> {
  const id = diskDeviceId({ node })
  await ejectMedium(qmp, node)
  await withUndo(`insert into ${id}`, async (undo) => {
    await addBlockNodes(qmp, undo, node, path, format, true)
    await qmp.execute('blockdev-open-tray', { id, force: true })
    await undo.step(`the medium in ${id}`, () => qmp.execute('blockdev-insert-medium', { id, 'node-name': node }), () => qmp.execute('blockdev-remove-medium', { id }))
    await qmp.execute('blockdev-close-tray', { id })
  })
}

export async function ejectMedium(qmp: QmpClient, node: string): Promise<void> {
  const id = diskDeviceId({ node })
  await qmp.execute('blockdev-open-tray', { id, force: true })
  await qmp.execute('blockdev-remove-medium', { id })
  await qmp.execute('blockdev-close-tray', { id })
  await removeBlockNodes(qmp, node)
}

export async function attachNic(qmp: QmpClient, nic: QemuNic, port: number): Promise<void> {
  await withUndo(`hot-plug of NIC ${nic.id}`, async (undo) => {
    await undo.step(`netdev ${netdevId(nic)}`, () => qmp.execute('netdev_add', { type: 'tap', id: netdevId(nic), ifname: nic.tap, script: 'no', downscript: 'no' }), () => qmp.execute('netdev_del', { id: netdevId(nic) }))
    await qmp.execute('device_add', { driver: NIC_DEVICES[nic.model], id: nic.id, netdev: netdevId(nic), mac: nic.mac, bus: hotplugPortId(port) })
  })
}

export async function detachNic(qmp: QmpClient, id: string, timeoutMs = 30_000): Promise<void> {
  const gone = deviceGone(qmp, id, timeoutMs)
  await qmp.execute('device_del', { id })
  await gone
  await qmp.execute('netdev_del', { id: netdevId({ id }) }).catch(() => undefined)
}

export interface DeviceList {
  /** Block devices by qdev id, with the image file of their medium (undefined when empty). */
  disks: { id: string; file?: string }[]
  /** PCI devices by qdev id, behind bridges included. */
  pci: string[]
  /** vCPUs present (hot-plugged ones included). */
  vcpus: number
}

/** What QEMU itself says the VM has (query-block, query-pci, query-cpus-fast). */
export async function listDevices(qmp: QmpClient): Promise<DeviceList> {
  const blocks = await qmp.execute<{ qdev?: string; inserted?: { file?: string } }[]>('query-block')
  const buses = await qmp.execute<{ devices: PciDevice[] }[]>('query-pci')
  const pci: string[] = []
  const walk = (devices: PciDevice[]) => {
    for (const d of devices) {
      if (d.qdev_id) pci.push(d.qdev_id)
      walk(d.pci_bridge?.devices ?? [])
    }
  }
  for (const bus of buses) walk(bus.devices)
  const disks = blocks.filter((b) => b.qdev).map((b) => ({ id: b.qdev!.replace(/^\/machine\/peripheral\//, '').replace(/\/.*$/, ''), ...(b.inserted?.file ? { file: b.inserted.file } : {}) }))
  const vcpus = (await qmp.execute<unknown[]>('query-cpus-fast')).length
  return { disks, pci, vcpus }
}

interface CpuSlot {
  type: string
  props: Record<string, number>
  'qom-path'?: string
}

/** Slots in topology order: the boot CPU first, so adding fills upwards and removing empties from the top. */
const slotOrder = (a: CpuSlot, b: CpuSlot) => {
  for (const key of ['socket-id', 'die-id', 'core-id', 'thread-id']) if ((a.props[key] ?? 0) !== (b.props[key] ?? 0)) return (a.props[key] ?? 0) - (b.props[key] ?? 0)
  return 0
}

async function cpuSlots(qmp: QmpClient): Promise<CpuSlot[]> {
  return (await qmp.execute<CpuSlot[]>('query-hotpluggable-cpus')).sort(slotOrder)
}

/**
 * Plugs or unplugs vCPUs (ACPI CPU hot-plug, within -smp maxcpus) until `count` are present.
 * Removing one needs the guest to let go of it, which it may refuse or take time to do.
 */
export async function setVcpus(qmp: QmpClient, count: number, timeoutMs = 15_000): Promise<void> {
  const slots = await cpuSlots(qmp)
  if (count < 1 || count > slots.length) throw new Error(`this VM can have 1 to ${slots.length} vCPUs, not ${count}`)
  for (const [index, slot] of slots.entries()) {
    if (index < count && !slot['qom-path']) await qmp.execute('device_add', { driver: slot.type, id: `vcpu${index}`, ...slot.props })
    if (index >= count && slot['qom-path']) await qmp.execute('device_del', { id: slot['qom-path'] })
  }
  const deadline = Date.now() + timeoutMs
  while ((await cpuSlots(qmp)).filter((s) => s['qom-path']).length !== count) {
    if (Date.now() > deadline) throw new Error(`the guest did not release its vCPUs within ${timeoutMs / 1000} s`)
    await new Promise((r) => setTimeout(r, 200))
  }
}
