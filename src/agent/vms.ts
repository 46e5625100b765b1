// The VMs running on this host: one hypervisor process each (QEMU, or the simulator in tests),
// found again after a daemon restart, with a queue per VM so that operations on one VM never
// interleave.
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { bridgeName, tapName, type HostNetwork } from '../net/bridge.js'
import type { DeviceList, HypervisorBackend, MigrationStats, RunningVm, StopReason } from '../qemu/backend.js'
import type { QemuVmConfig } from '../qemu/config.js'
import { withUndo } from '../lib/undo.js'
import { diskNode, hardwareFor, vmRunDir, type HostHardware, type VmSpec } from './hardware.js'
import type { StartRequest } from './contract.js'

export type { StopReason }

/** What the agent reports about VMs that changed on their own (guest poweroff or reboot, crash, full disk, QEMU death). */
export interface VmStateSink {
  stopped(uuid: string, reason: StopReason, nvram?: string): void
  /** QEMU paused the VM because a disk write failed (ENOSPC: its SR is full). */
  pausedOnIoError(uuid: string, device: string, noSpace: boolean): void
}

export class VmRuntime {
  private readonly running = new Map<string, RunningVm>()
  /** VMs we are stopping ourselves: their exit is not news. */
  private readonly stopping = new Set<string>()
  /** VMs whose QEMU we let go of at daemon stop (they run on without us). */
  private readonly detached = new WeakSet<RunningVm>()
  private readonly queues = new Map<string, Promise<unknown>>()

  constructor(
    private readonly host: HostHardware,
    readonly hostUuid: string,
    private readonly sink: VmStateSink,
    private readonly backend: HypervisorBackend,
    /** The host's bridges and taps (also used for networks by the agent's net.* calls). */
    readonly network: HostNetwork,
  ) {}

  /** Runs `op` after every earlier operation on the same VM. */
  private queued<T>(uuid: string, op: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(uuid) ?? Promise.resolve()
    const next = previous.catch(() => undefined).then(op)
    this.queues.set(uuid, next)
    return next
  }

  runningUuids(): string[] {
    return [...this.running.keys()]
  }

  isRunning(uuid: string): boolean {
    return this.running.has(uuid)
  }

  /** The VNC or serial socket of a VM running here. */
  consoleSocket(uuid: string, protocol: 'rfb' | 'vt100'): string | undefined {
    return this.running.get(uuid)?.consoleSocket(protocol)
  }

  async start(request: StartRequest, statePath?: string): Promise<{ pid: number }> {
    const { vm } = await this.launch(request, async (config) => ({ vm: await this.backend.launch(config, statePath) }))
    return { pid: vm.pid }
  }

  /** A live migration's destination: the VM's QEMU, vCPUs stopped, waiting for the stream on `address`; the port it listens on. */
  async receive(request: StartRequest, address: string, exports: number[] = []): Promise<{ port: number; nbdPort?: number }> {
    const { port, nbdPort } = await this.launch(request, (config) => this.backend.receive(config, address, exports.map(diskNode)))
    return { port, ...(nbdPort ? { nbdPort } : {}) }
  }

  /** Sends running VM `uuid` live to the destination at address:port (its disks `mirror.userdevices` first to its NBD exports); it stays here, stopped, until the caller stops it. */
  migrateSend(uuid: string, address: string, port: number, stallMs: number, mirror?: { port: number; userdevices: number[] }): Promise<MigrationStats> {
    const mirrors = mirror && { port: mirror.port, nodes: mirror.userdevices.map(diskNode) }
    return this.queued(uuid, () => this.vm(uuid).migrateTo(address, port, { stallMs, ...(mirrors ? { mirror: mirrors } : {}) }))
  }

  /** On a destination: waits until the whole stream is in; the VM stays stopped until unpaused. */
  received(uuid: string, timeoutMs: number): Promise<void> {
    return this.queued(uuid, () => this.vm(uuid).received(timeoutMs))
  }

  /** The UEFI variable store of a VM running here as it is now (for a migration destination). */
  nvram(uuid: string): Promise<string | undefined> {
    return this.takeNvram(uuid)
  }

  private async launch<T extends { vm: RunningVm }>(request: StartRequest, launch: (config: QemuVmConfig) => Promise<T>): Promise<T> {
    return this.queued(request.uuid, async () => {
      if (this.running.has(request.uuid)) throw new Error(`VM ${request.uuid} is already running here`)
      const nics = request.nics.map((n) => ({ ...n, tap: tapName(request.uuid, n.device), bridge: bridgeName(this.hostUuid, n.network) }))
      const spec: VmSpec = { ...request, nics }
      const config = { ...hardwareFor(spec, this.host), paused: request.paused ?? false }
      return withUndo('vm.start', async (undo) => {
        await undo.step(`the run directory ${config.runDir}`, () => mkdir(config.runDir, { recursive: true, mode: 0o700 }), () => rm(config.runDir, { recursive: true, force: true }))
        if (config.nvram) await this.prepareNvram(config.nvram, spec.secureBoot, request.nvram)
        for (const nic of nics) {
          await this.network.ensureBridge(nic.bridge)
          // Registered first: a tap made but not yet on its bridge goes too.
          undo.push(`tap ${nic.tap}`, () => this.network.deleteLink(nic.tap))
          await this.network.createTap(nic.tap, nic.bridge)
        }
        const launched = await launch(config)
        this.watch(launched.vm, spec)
        return launched
      })
    })
  }

  private async prepareNvram(path: string, secureBoot: boolean, stored?: string): Promise<void> {
    if (stored) return writeFile(path, gunzipSync(Buffer.from(stored, 'base64')), { mode: 0o600 })
    await copyFile(join(this.host.ovmfDir, secureBoot ? 'OVMF_VARS_4M.ms.fd' : 'OVMF_VARS_4M.fd'), path)
  }

  /** The VM's UEFI variable store, compressed (OVMF's 528 KiB store shrinks to about 1 KiB). */
  private async takeNvram(uuid: string): Promise<string | undefined> {
    const path = join(vmRunDir(this.host.runDir, uuid), 'nvram.fd')
    if (!existsSync(path)) return undefined
    return gzipSync(await readFile(path), { level: 9 }).toString('base64')
  }

  private watch(vm: RunningVm, spec: Pick<VmSpec, 'uuid' | 'nics'>): void {
    this.running.set(vm.uuid, vm)
    vm.onPausedOnIoError((device, noSpace) => this.sink.pausedOnIoError(vm.uuid, device, noSpace))
    void vm.stopped.then(async (reason) => {
      if (this.running.get(vm.uuid) === vm) this.running.delete(vm.uuid)
      // Detached at daemon stop, the VM runs on: its taps stay in their bridges.
      if (this.detached.has(vm)) return
      for (const nic of spec.nics) await this.network.deleteLink(nic.tap)
      if (this.stopping.has(vm.uuid)) return
      this.sink.stopped(vm.uuid, reason, await this.takeNvram(vm.uuid))
      await rm(vmRunDir(this.host.runDir, vm.uuid), { recursive: true, force: true })
    })
  }

  /** Clean: ask the guest (ACPI power button) and wait; hard: stop QEMU now. Returns the NVRAM to keep. */
  async stop(uuid: string, clean: boolean, timeoutMs = 60_000): Promise<{ nvram?: string }> {
    return this.queued(uuid, async () => {
      const vm = this.running.get(uuid)
      if (!vm) return {}
      this.stopping.add(uuid)
      try {
        const gone = vm.stopped
        if (clean) {
          // The press is repeated: a guest still booting has no handler yet and would lose it.
          const deadline = Date.now() + timeoutMs
          let down = false
          void gone.then(() => (down = true))
          while (!down && Date.now() < deadline) {
            await vm.powerButton().catch(() => undefined)
            await Promise.race([gone, new Promise((r) => setTimeout(r, 3_000))])
          }
          if (!down) throw Object.assign(new Error('the guest did not shut down in time'), { code: 'VM_SHUTDOWN_TIMEOUT', params: [uuid, String(timeoutMs / 1000)] })
        } else {
          await vm.quit().catch(() => vm.kill(5_000))
        }
        return await this.cleanUp(vm)
      } finally {
        this.stopping.delete(uuid)
      }
    })
  }

  /** After the VM was told to go: waits for it, keeps the NVRAM and removes the run dir. */
  private async cleanUp(vm: RunningVm): Promise<{ nvram?: string }> {
    await vm.stopped
    await vm.kill(5_000)
    const nvram = await this.takeNvram(vm.uuid)
    await rm(vmRunDir(this.host.runDir, vm.uuid), { recursive: true, force: true })
    return nvram ? { nvram } : {}
  }

  /** Saves memory and device state to `statePath`, then ends the VM's process (none runs while Suspended). */
  async suspend(uuid: string, statePath: string): Promise<{ nvram?: string }> {
    return this.queued(uuid, async () => {
      const vm = this.vm(uuid)
      this.stopping.add(uuid)
      try {
        await withUndo('vm.suspend', async (undo) => {
          await undo.step(`the pause of ${uuid}`, () => vm.pause(), () => vm.unpause())
          undo.push(`the state file ${statePath}`, () => rm(statePath, { force: true }))
          await vm.saveState(statePath)
        })
        await vm.quit().catch(() => undefined)
        return await this.cleanUp(vm)
      } finally {
        this.stopping.delete(uuid)
      }
    })
  }

  /** The QEMU view of one device of a VM, derived exactly as at start. */
  private device(uuid: string, platform: Record<string, string>, disks: VmSpec['disks'], nics: StartRequest['nics']) {
    const base = { uuid, name: '', memoryBytes: 0, vcpus: 1, maxVcpus: 1, firmware: 'bios' as const, secureBoot: false, platform, bootOrder: '', oemStrings: [] }
    return hardwareFor({ ...base, disks, nics: nics.map((n) => ({ ...n, tap: tapName(uuid, n.device) })) }, this.host)
  }

  async plugDisk(uuid: string, platform: Record<string, string>, disk: VmSpec['disks'][number]): Promise<void> {
    await this.queued(uuid, async () => {
      const vm = this.vm(uuid)
      const config = this.device(uuid, platform, [disk], [])
      await vm.plugDisk(config.disks[0]!, config.hotplugPorts)
    })
  }

  async unplugDisk(uuid: string, userdevice: number): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).unplugDisk(diskNode(userdevice)))
  }

  async insertCd(uuid: string, userdevice: number, path: string, format: 'qcow2' | 'raw'): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).insertMedium(diskNode(userdevice), path, format))
  }

  async ejectCd(uuid: string, userdevice: number): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).ejectMedium(diskNode(userdevice)))
  }

  async plugNic(uuid: string, platform: Record<string, string>, nic: StartRequest['nics'][number]): Promise<void> {
    await this.queued(uuid, async () => {
      const vm = this.vm(uuid)
      const config = this.device(uuid, platform, [], [nic])
      const bridge = bridgeName(this.hostUuid, nic.network)
      const tap = config.nics[0]!.tap
      await this.network.ensureBridge(bridge)
      await withUndo('vm.plug-nic', async (undo) => {
        undo.push(`tap ${tap}`, () => this.network.deleteLink(tap))
        await this.network.createTap(tap, bridge)
        await vm.plugNic(config.nics[0]!, config.hotplugPorts)
      })
    })
  }

  /** A NIC of a running VM changes network: its tap moves to the other bridge; the guest keeps its device. */
  async moveNic(uuid: string, device: string, network: string): Promise<void> {
    await this.queued(uuid, async () => {
      this.vm(uuid)
      const bridge = bridgeName(this.hostUuid, network)
      await this.network.ensureBridge(bridge)
      await this.network.moveLink(tapName(uuid, device), bridge)
    })
  }

  async unplugNic(uuid: string, device: string): Promise<void> {
    await this.queued(uuid, async () => {
      await this.vm(uuid).unplugNic(`n${device}`)
      await this.network.deleteLink(tapName(uuid, device))
    })
  }

  /**
   * A checkpoint: with the vCPUs stopped, every disk is frozen (by `freeze`, given how to freeze
   * one live) at the same instant and the memory and device state saved to `statePath`; then the
   * VM runs on.
   */
  async checkpoint<T>(uuid: string, freeze: (freezeDisk: (userdevice: number, overlay: string) => Promise<void>) => Promise<T>, statePath: string): Promise<T> {
    return this.queued(uuid, async () => {
      const vm = this.vm(uuid)
      const running = await vm.isRunning()
      await vm.pause()
      try {
        const frozen = await freeze((userdevice, overlay) => vm.freezeDisk(diskNode(userdevice), overlay))
        await vm.saveState(statePath)
        return frozen
      } finally {
        if (running) await vm.unpause()
      }
    })
  }

  async resizeDisk(uuid: string, userdevice: number, size: number): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).resizeDisk(diskNode(userdevice), size))
  }

  /** Moves a running disk live onto the image at `target`. */
  async moveDisk(uuid: string, userdevice: number, target: { path: string; format: 'qcow2' | 'raw' }, stallMs: number): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).moveDisk(diskNode(userdevice), target, stallMs))
  }

  /** Live snapshot of a disk: the guest goes on writing to a new overlay. */
  async freezeDisk(uuid: string, userdevice: number, overlayPath: string): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).freezeDisk(diskNode(userdevice), overlayPath))
  }

  /** Streams into a running disk the data of its backing chain above `basePath`. */
  async streamDisk(uuid: string, userdevice: number, basePath: string | undefined): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).streamDisk(diskNode(userdevice), basePath))
  }

  devices(uuid: string): Promise<DeviceList> {
    return this.queued(uuid, () => this.vm(uuid).devices())
  }

  async reset(uuid: string): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).reset())
  }

  async pause(uuid: string): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).pause())
  }

  async unpause(uuid: string): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).unpause())
  }

  async setVcpus(uuid: string, count: number): Promise<void> {
    await this.queued(uuid, () => this.vm(uuid).setVcpus(count))
  }

  private vm(uuid: string): RunningVm {
    const vm = this.running.get(uuid)
    if (!vm) throw Object.assign(new Error(`VM ${uuid} is not running here`), { code: 'VM_BAD_POWER_STATE', params: [uuid, 'running', 'halted'] })
    return vm
  }

  /** After a daemon restart: re-attach to the processes of these VMs; returns those still running. */
  async reattach(vms: { uuid: string; devices: string[] }[]): Promise<string[]> {
    const alive: string[] = []
    for (const vm of vms) {
      const found = await this.backend.attach(vmRunDir(this.host.runDir, vm.uuid), vm.uuid).catch(() => undefined)
      if (!found) continue
      this.watch(found, { uuid: vm.uuid, nics: vm.devices.map((device) => ({ device, mac: '', tap: tapName(vm.uuid, device) })) })
      alive.push(vm.uuid)
    }
    // QEMUs no record places here (a migration's destination when the daemon died) are held too: the stray check stops them.
    for (const uuid of await this.backend.survivors(this.host.runDir)) {
      if (this.running.has(uuid)) continue
      const found = await this.backend.attach(vmRunDir(this.host.runDir, uuid), uuid).catch(() => undefined)
      if (found) this.watch(found, { uuid, nics: [] })
    }
    return alive
  }

  /** Closes our links to the VMs without touching them (daemon shutdown). */
  async detachAll(): Promise<void> {
    for (const vm of this.running.values()) {
      this.detached.add(vm)
      await vm.detach().catch(() => undefined)
    }
    this.running.clear()
  }
}
