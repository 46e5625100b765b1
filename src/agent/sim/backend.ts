// A simulated hypervisor, for tests and the control-plane scale tests (DESIGN §7) only: the
// daemon never wires it. Its VMs are records in this process (running or paused, disks, NICs,
// vCPUs), with no emulator and no root; what lands on disk is what the storage layer reads
// back: overlays and streams as real qcow2 operations (qemu-img), saved states as a small
// marker file. A test makes a guest power off, reboot, crash or fill its disk through `guest()`.
import { access, readFile, writeFile } from 'node:fs/promises'
import { runPaths } from '../../qemu/argv.js'
import type { DeviceList, HypervisorBackend, MigrationStats, RunningVm, StopReason } from '../../qemu/backend.js'
import type { QemuDisk, QemuNic, QemuVmConfig } from '../../qemu/config.js'
import { convertInto, createImage, imageChain, rebaseImage, resizeImage } from '../../qemu/img.js'

/** What the simulator writes as a VM's saved state: enough to tell it is this VM's, and what it had. */
interface SavedState {
  simulatedVm: string
  vcpus: number
  boots: number
}

interface SimDisk {
  file?: string
  format: QemuDisk['format']
  bus: QemuDisk['bus']
}

/** Buses whose devices sit on PCI (hot-pluggable, listed by query-pci). */
const PCI_BUSES = new Set<QemuDisk['bus']>(['virtio', 'nvme'])

export class SimBackend implements HypervisorBackend {
  private readonly machines = new Map<string, SimMachine>()
  private nextPid = 100_000
  /** VMs that stopped without the agent asking (guest poweroff, reboot, crash, death): the agent reports each. */
  unaskedStops = 0

  async launch(config: QemuVmConfig, incomingState?: string): Promise<RunningVm> {
    if (this.machines.has(config.uuid)) throw new Error(`VM ${config.uuid} already runs as simulated pid ${this.machines.get(config.uuid)!.pid}`)
    for (const disk of config.disks) if (disk.path) await access(disk.path).catch(() => Promise.reject(new Error(`VM ${config.uuid} did not start: cannot open ${disk.path}`)))
    const saved = incomingState === undefined ? undefined : await readSavedState(incomingState, config.uuid)
    const machine = new SimMachine(config, this.nextPid++, saved, (asked) => {
      this.machines.delete(config.uuid)
      if (!asked) this.unaskedStops++
    })
    this.machines.set(config.uuid, machine)
    return machine.link()
  }

  /** The simulator has no migration stream: a live migration onto it fails as one to a host that cannot receive it would. */
  async receive(config: QemuVmConfig): Promise<{ vm: RunningVm; port: number }> {
    throw new Error(`VM ${config.uuid}: the simulator cannot receive a live migration`)
  }

  async survivors(): Promise<string[]> {
    return this.running()
  }

  async attach(_runDir: string, uuid: string): Promise<RunningVm | undefined> {
    return this.machines.get(uuid)?.link()
  }

  /** The guest of running VM `uuid`, to make it act. */
  guest(uuid: string): SimGuest {
    const machine = this.machines.get(uuid)
    if (!machine) throw new Error(`VM ${uuid} does not run in the simulator`)
    return machine
  }

  /** The uuids of the VMs that run. */
  running(): string[] {
    return [...this.machines.keys()]
  }
}

/** What a test can make a simulated guest (or its process) do. */
export interface SimGuest {
  /** What QEMU would have been started with. */
  readonly config: QemuVmConfig
  readonly status: 'running' | 'paused'
  /** Boots so far, resets in place included. */
  readonly boots: number
  readonly vcpus: number
  powerOff(): void
  /** Reboots: in place, or ends the VM when reboot is set to shut down (actions_after_reboot = destroy). */
  reboot(): void
  crash(): void
  /** A disk write failed: the VM pauses (noSpace: the SR is full). */
  ioError(node: string, noSpace: boolean): void
  /** The process dies under us (killed from outside). */
  die(): void
}

async function readSavedState(path: string, uuid: string): Promise<SavedState> {
  const text = await readFile(path, 'utf8')
  let saved: Partial<SavedState> = {}
  try {
    saved = JSON.parse(text) as Partial<SavedState>
  } catch {
    // not ours: refused below
  }
  if (saved.simulatedVm !== uuid || typeof saved.vcpus !== 'number' || typeof saved.boots !== 'number') throw new Error(`loading the VM state failed: ${path} is no saved state of simulated VM ${uuid}`)
  return saved as SavedState
}

class SimMachine implements SimGuest {
  status: 'running' | 'paused'
  boots: number
  vcpus: number
  private readonly disks = new Map<string, SimDisk>()
  private readonly nics = new Set<string>()
  /** Hot-plug port -> the device in it. */
  private readonly ports = new Map<number, string>()
  private readonly links = new Set<SimLink>()
  private ended = false

  constructor(
    readonly config: QemuVmConfig,
    readonly pid: number,
    saved: SavedState | undefined,
    private readonly onEnd: (asked: boolean) => void,
  ) {
    this.status = config.paused ? 'paused' : 'running'
    this.vcpus = saved?.vcpus ?? config.vcpus
    this.boots = saved?.boots ?? 1
    for (const d of config.disks) this.disks.set(d.node, { ...(d.path ? { file: d.path } : {}), format: d.format, bus: d.bus })
    for (const n of config.nics) this.nics.add(n.id)
  }

  link(): SimLink {
    const link = new SimLink(this)
    this.links.add(link)
    return link
  }

  unlink(link: SimLink): void {
    this.links.delete(link)
  }

  /** The process ends; `asked`: the agent made it end (power button, quit, kill). */
  end(reason: StopReason, asked = true): void {
    if (this.ended) return
    this.ended = true
    this.onEnd(asked)
    for (const link of this.links) link.close(reason)
    this.links.clear()
  }

  powerOff(): void {
    this.end('shutdown', false)
  }

  reboot(): void {
    if (this.config.onReboot === 'shutdown') return this.end('reboot', false)
    this.boots++
  }

  crash(): void {
    // As configured for QEMU (-action panic=shutdown): a panic ends the process.
    this.end('crash', false)
  }

  ioError(node: string, noSpace: boolean): void {
    this.disk(node)
    this.status = 'paused'
    for (const link of this.links) link.ioErrorPause(`${node}-dev`, noSpace)
  }

  die(): void {
    this.end('killed', false)
  }

  disk(node: string): SimDisk {
    const disk = this.disks.get(node)
    if (!disk) throw new Error(`no disk ${node}-dev in this VM`)
    return disk
  }

  /** The top image of a disk that has one. */
  image(node: string): string {
    const file = this.disk(node).file
    if (!file) throw new Error(`disk ${node}-dev has no medium`)
    return file
  }

  saved(): SavedState {
    return { simulatedVm: this.config.uuid, vcpus: this.vcpus, boots: this.boots }
  }

  plug(id: string, hotplugPorts: number): void {
    for (let port = 0; port < hotplugPorts; port++) {
      if (this.ports.has(port)) continue
      this.ports.set(port, id)
      return
    }
    throw new Error('no free hot-plug port left on this VM (restart it to add more devices)')
  }

  unplug(id: string): void {
    for (const [port, held] of this.ports) if (held === id) this.ports.delete(port)
  }

  addDisk(disk: QemuDisk, hotplugPorts: number): void {
    if (!PCI_BUSES.has(disk.bus)) throw new Error(`a ${disk.bus} disk cannot be hot-plugged`)
    if (this.disks.has(disk.node)) throw new Error(`Duplicate device ID '${disk.node}-dev'`)
    this.plug(`${disk.node}-dev`, hotplugPorts)
    this.disks.set(disk.node, { ...(disk.path ? { file: disk.path } : {}), format: disk.format, bus: disk.bus })
  }

  removeDisk(node: string): void {
    this.disk(node)
    this.disks.delete(node)
    this.unplug(`${node}-dev`)
  }

  addNic(nic: QemuNic, hotplugPorts: number): void {
    if (this.nics.has(nic.id)) throw new Error(`Duplicate device ID '${nic.id}'`)
    this.plug(nic.id, hotplugPorts)
    this.nics.add(nic.id)
  }

  removeNic(id: string): void {
    if (!this.nics.delete(id)) throw new Error(`Device '${id}' not found`)
    this.unplug(id)
  }

  devices(): DeviceList {
    const ports = Array.from({ length: this.config.hotplugPorts }, (_, i) => `hp${i}`)
    const pciDisks = [...this.disks].filter(([, d]) => PCI_BUSES.has(d.bus)).map(([node]) => `${node}-dev`)
    return {
      disks: [...this.disks].map(([node, d]) => ({ id: `${node}-dev`, ...(d.file ? { file: d.file } : {}) })),
      pci: [...ports, ...pciDisks, ...this.nics],
      vcpus: this.vcpus,
    }
  }
}

/** One link of the agent to a simulated VM (a QMP connection, for QEMU). */
class SimLink implements RunningVm {
  readonly stopped: Promise<StopReason>
  private resolveStopped!: (reason: StopReason) => void
  private readonly ioErrorListeners: ((device: string, noSpace: boolean) => void)[] = []
  private closed = false

  constructor(private readonly machine: SimMachine) {
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve))
  }

  get pid(): number {
    return this.machine.pid
  }

  get uuid(): string {
    return this.machine.config.uuid
  }

  close(reason: StopReason): void {
    this.closed = true
    this.resolveStopped(reason)
  }

  ioErrorPause(device: string, noSpace: boolean): void {
    for (const listener of this.ioErrorListeners) listener(device, noSpace)
  }

  /** The machine, while this link to it is open (as QMP commands fail on a closed connection). */
  private get vm(): SimMachine {
    if (this.closed) throw new Error('the simulated VM is gone')
    return this.machine
  }

  consoleSocket(protocol: 'rfb' | 'vt100'): string {
    const paths = runPaths(this.machine.config.runDir)
    return protocol === 'rfb' ? paths.vnc : paths.serialSocket
  }

  onPausedOnIoError(listener: (device: string, noSpace: boolean) => void): void {
    this.ioErrorListeners.push(listener)
  }

  async powerButton(): Promise<void> {
    const vm = this.vm
    // A guest that runs handles the press: it shuts down (after this call returns, as a guest would).
    if (vm.status === 'running') setImmediate(() => vm.end('shutdown'))
  }

  async quit(): Promise<void> {
    this.vm.end('killed')
  }

  async kill(): Promise<void> {
    this.machine.end('killed')
  }

  async detach(): Promise<void> {
    this.machine.unlink(this)
    this.close('killed')
  }

  async reset(): Promise<void> {
    this.vm.boots++
  }

  async pause(): Promise<void> {
    this.vm.status = 'paused'
  }

  async unpause(): Promise<void> {
    this.vm.status = 'running'
  }

  async isRunning(): Promise<boolean> {
    return this.vm.status === 'running'
  }

  async saveState(statePath: string): Promise<void> {
    await writeFile(statePath, JSON.stringify(this.vm.saved()))
  }

  async migrateTo(): Promise<MigrationStats> {
    throw new Error('the simulator cannot send a live migration')
  }

  async received(): Promise<void> {
    throw new Error('the simulator cannot receive a live migration')
  }

  async freezeDisk(node: string, overlayPath: string): Promise<void> {
    const vm = this.vm
    const disk = vm.disk(node)
    await createImage({ path: overlayPath, format: 'qcow2', backing: { path: vm.image(node), format: disk.format } })
    disk.file = overlayPath
    disk.format = 'qcow2'
  }

  async streamDisk(node: string, basePath: string | undefined): Promise<void> {
    const top = this.vm.image(node)
    const chain = await imageChain(top, this.vm.disk(node).format)
    const base = basePath === undefined ? undefined : chain.slice(1).find((i) => i.path === basePath)
    if (basePath !== undefined && !base) throw new Error(`${basePath} is not in the disk's backing chain`)
    await rebaseImage(top, base && { path: base.path, format: base.format === 'raw' ? 'raw' : 'qcow2' })
  }

  async resizeDisk(node: string, size: number): Promise<void> {
    await resizeImage(this.vm.image(node), size, this.vm.disk(node).format)
  }

  /** A move done as a copy: the simulated guest writes nothing meanwhile. */
  async moveDisk(node: string, target: { path: string; format: QemuDisk['format'] }): Promise<void> {
    const disk = this.vm.disk(node)
    await convertInto({ source: this.vm.image(node), sourceFormat: disk.format, target: target.path, targetFormat: target.format, targetIsZero: true })
    disk.file = target.path
    disk.format = target.format
  }

  async plugDisk(disk: QemuDisk, hotplugPorts: number): Promise<void> {
    if (disk.path) await access(disk.path)
    this.vm.addDisk(disk, hotplugPorts)
  }

  async unplugDisk(node: string): Promise<void> {
    this.vm.removeDisk(node)
  }

  async insertMedium(node: string, path: string, format: QemuDisk['format']): Promise<void> {
    const disk = this.vm.disk(node)
    await access(path)
    disk.file = path
    disk.format = format
  }

  async ejectMedium(node: string): Promise<void> {
    delete this.vm.disk(node).file
  }

  async plugNic(nic: QemuNic, hotplugPorts: number): Promise<void> {
    this.vm.addNic(nic, hotplugPorts)
  }

  async unplugNic(id: string): Promise<void> {
    this.vm.removeNic(id)
  }

  async setVcpus(count: number): Promise<void> {
    const vm = this.vm
    if (count < 1 || count > vm.config.maxVcpus) throw new Error(`this VM can have 1 to ${vm.config.maxVcpus} vCPUs, not ${count}`)
    vm.vcpus = count
  }

  async devices(): Promise<DeviceList> {
    return this.vm.devices()
  }
}
