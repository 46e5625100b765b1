// The VMs running on this host: one detached QEMU each, found again after a daemon restart,
// with a queue per VM so that operations on one VM never interleave.
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync, gzipSync } from 'node:zlib'
import { bridgeName, createTap, deleteLink, ensureBridge, moveLink, tapName } from '../net/bridge.js'
import { attachQemu, killQemu, launchQemu, type QemuProcess } from '../qemu/process.js'
import { liveSnapshot, resizeLive, streamInto } from '../qemu/blockjobs.js'
import { attachDisk, attachNic, detachDisk, detachNic, ejectMedium, freeHotplugPort, insertMedium, listDevices, setVcpus, type DeviceList } from '../qemu/hotplug.js'
import { hardwareFor, vmRunDir, type HostHardware, type VmSpec } from './hardware.js'

export type StopReason = 'shutdown' | 'reboot' | 'crash' | 'killed'

/** What the agent reports about VMs that changed on their own (guest poweroff or reboot, crash, full disk, QEMU death). */
export interface VmStateSink {
  stopped(uuid: string, reason: StopReason, nvram?: string): void
  /** QEMU paused the VM because a disk write failed (ENOSPC: its SR is full). */
  pausedOnIoError(uuid: string, device: string, noSpace: boolean): void
}

/** A start request from the API layer: NICs name their network; the agent picks bridges and taps. */
export type StartRequest = Omit<VmSpec, 'nics'> & {
  nics: { device: string; mac: string; network: string }[]
  /** VM.NVRAM's EFI-variables, if the VM has run before. */
  nvram?: string
  paused?: boolean
}

export class VmRuntime {
  private readonly running = new Map<string, QemuProcess>()
  /** VMs we are stopping ourselves: their exit is not news. */
  private readonly stopping = new Set<string>()
  private readonly queues = new Map<string, Promise<unknown>>()

  constructor(
    private readonly host: HostHardware,
    readonly hostUuid: string,
    private readonly sink: VmStateSink,
  ) {}

  /** Runs `op` after every earlier operation on the same VM. */
  private queued<T>(uuid: string, op: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(uuid) ?? Promise.resolve()
    const next = previous.catch(() => undefined).then(op)
    this.queues.set(uuid, next)
    return next
  }

  isRunning(uuid: string): boolean {
    return this.running.has(uuid)
  }

  /** The VNC or serial socket of a VM running here. */
  consoleSocket(uuid: string, protocol: 'rfb' | 'vt100'): string | undefined {
    const proc = this.running.get(uuid)
    if (!proc) return undefined
    return protocol === 'rfb' ? proc.paths.vnc : proc.paths.serialSocket
  }

  async start(request: StartRequest, statePath?: string): Promise<{ pid: number }> {
    return this.queued(request.uuid, async () => {
      if (this.running.has(request.uuid)) throw new Error(`VM ${request.uuid} is already running here`)
      const nics = request.nics.map((n) => ({ ...n, tap: tapName(request.uuid, n.device), bridge: bridgeName(this.hostUuid, n.network) }))
      const spec: VmSpec = { ...request, nics }
      const config = { ...hardwareFor(spec, this.host), paused: statePath !== undefined || (request.paused ?? false), incoming: statePath !== undefined }
      await mkdir(config.runDir, { recursive: true, mode: 0o700 })
      if (config.nvram) await this.prepareNvram(config.nvram, spec.secureBoot, request.nvram)
      try {
        for (const nic of nics) {
          await ensureBridge(nic.bridge)
          await createTap(nic.tap, nic.bridge)
        }
        const proc = await launchQemu(config)
        if (statePath) {
          try {
            await loadState(proc.qmp, statePath)
            if (!request.paused) await proc.qmp.execute('cont')
          } catch (err) {
            await killQemu(proc, 0)
            throw err
          }
        }
        this.watch(proc, spec)
        return { pid: proc.pid }
      } catch (err) {
        for (const nic of nics) await deleteLink(nic.tap)
        await rm(config.runDir, { recursive: true, force: true })
        throw err
      }
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

  private watch(proc: QemuProcess, spec: Pick<VmSpec, 'uuid' | 'nics'>): void {
    this.running.set(proc.uuid, proc)
    let reason: StopReason = 'killed'
    proc.qmp.on('event', (e: { event: string; data: { guest?: boolean; reason?: string; action?: string; device?: string; nospace?: boolean } }) => {
      if (e.event === 'SHUTDOWN' && reason !== 'crash') reason = !e.data.guest ? 'killed' : e.data.reason === 'guest-reset' ? 'reboot' : 'shutdown'
      if (e.event === 'GUEST_PANICKED') reason = 'crash'
      if (e.event === 'BLOCK_IO_ERROR' && e.data.action === 'stop') this.sink.pausedOnIoError(proc.uuid, String(e.data.device ?? ''), Boolean(e.data.nospace))
    })
    proc.qmp.once('close', () => {
      this.running.delete(proc.uuid)
      void (async () => {
        for (const nic of spec.nics) await deleteLink(nic.tap)
        if (this.stopping.has(proc.uuid)) return
        this.sink.stopped(proc.uuid, reason, await this.takeNvram(proc.uuid))
        await rm(vmRunDir(this.host.runDir, proc.uuid), { recursive: true, force: true })
      })()
    })
  }

  /** Clean: ask the guest (ACPI power button) and wait; hard: stop QEMU now. Returns the NVRAM to keep. */
  async stop(uuid: string, clean: boolean, timeoutMs = 60_000): Promise<{ nvram?: string }> {
    return this.queued(uuid, async () => {
      const proc = this.running.get(uuid)
      if (!proc) return {}
      this.stopping.add(uuid)
      try {
        const gone = closed(proc)
        if (clean) {
          // The press is repeated: a guest still booting has no handler yet and would lose it.
          const deadline = Date.now() + timeoutMs
          let down = false
          void gone.then(() => (down = true))
          while (!down && Date.now() < deadline) {
            await proc.qmp.execute('system_powerdown').catch(() => undefined)
            await Promise.race([gone, new Promise((r) => setTimeout(r, 3_000))])
          }
          if (!down) throw Object.assign(new Error('the guest did not shut down in time'), { code: 'VM_SHUTDOWN_TIMEOUT', params: [uuid, String(timeoutMs / 1000)] })
        } else {
          await proc.qmp.execute('quit').catch(() => killQemu(proc, 5_000))
        }
        return await this.cleanUp(proc, gone)
      } finally {
        this.stopping.delete(uuid)
      }
    })
  }

  /** After QEMU was told to go: waits for it, keeps the NVRAM and removes the run dir. */
  private async cleanUp(proc: QemuProcess, gone: Promise<void>): Promise<{ nvram?: string }> {
    await gone
    await killQemu(proc, 5_000)
    const nvram = await this.takeNvram(proc.uuid)
    await rm(vmRunDir(this.host.runDir, proc.uuid), { recursive: true, force: true })
    return nvram ? { nvram } : {}
  }

  /** Saves memory and device state to `statePath`, then ends the QEMU (no QEMU runs while Suspended). */
  async suspend(uuid: string, statePath: string): Promise<{ nvram?: string }> {
    return this.queued(uuid, async () => {
      const proc = this.running.get(uuid)
      if (!proc) throw Object.assign(new Error(`VM ${uuid} is not running here`), { code: 'VM_BAD_POWER_STATE', params: [uuid, 'running', 'halted'] })
      this.stopping.add(uuid)
      try {
        await proc.qmp.execute('stop')
        try {
          await saveState(proc.qmp, statePath)
        } catch (err) {
          await rm(statePath, { force: true })
          await proc.qmp.execute('cont').catch(() => undefined)
          throw err
        }
        const gone = closed(proc)
        await proc.qmp.execute('quit').catch(() => undefined)
        return await this.cleanUp(proc, gone)
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
      const qmp = this.qmp(uuid)
      const config = this.device(uuid, platform, [disk], [])
      await attachDisk(qmp, config.disks[0]!, await freeHotplugPort(qmp, config.hotplugPorts))
    })
  }

  async unplugDisk(uuid: string, userdevice: number): Promise<void> {
    await this.queued(uuid, () => detachDisk(this.qmp(uuid), `d${userdevice}`))
  }

  async insertCd(uuid: string, userdevice: number, path: string, format: 'qcow2' | 'raw'): Promise<void> {
    await this.queued(uuid, () => insertMedium(this.qmp(uuid), `d${userdevice}`, path, format))
  }

  async ejectCd(uuid: string, userdevice: number): Promise<void> {
    await this.queued(uuid, () => ejectMedium(this.qmp(uuid), `d${userdevice}`))
  }

  async plugNic(uuid: string, platform: Record<string, string>, nic: StartRequest['nics'][number]): Promise<void> {
    await this.queued(uuid, async () => {
      const qmp = this.qmp(uuid)
      const config = this.device(uuid, platform, [], [nic])
      const bridge = bridgeName(this.hostUuid, nic.network)
      await ensureBridge(bridge)
      await createTap(config.nics[0]!.tap, bridge)
      try {
        await attachNic(qmp, config.nics[0]!, await freeHotplugPort(qmp, config.hotplugPorts))
      } catch (err) {
        await deleteLink(config.nics[0]!.tap)
        throw err
      }
    })
  }

  /** A NIC of a running VM changes network: its tap moves to the other bridge; the guest keeps its device. */
  async moveNic(uuid: string, device: string, network: string): Promise<void> {
    await this.queued(uuid, async () => {
      this.qmp(uuid)
      const bridge = bridgeName(this.hostUuid, network)
      await ensureBridge(bridge)
      await moveLink(tapName(uuid, device), bridge)
    })
  }

  async unplugNic(uuid: string, device: string): Promise<void> {
    await this.queued(uuid, async () => {
      await detachNic(this.qmp(uuid), `n${device}`)
      await deleteLink(tapName(uuid, device))
    })
  }

  /**
   * A checkpoint: with the vCPUs stopped, every disk is frozen (live snapshot) at the same instant
   * and the memory and device state saved to `statePath`; then the VM runs on.
   */
  async checkpoint(uuid: string, disks: { userdevice: number; overlay: string }[], statePath: string): Promise<void> {
    await this.queued(uuid, async () => {
      const qmp = this.qmp(uuid)
      const status = await qmp.execute<{ running: boolean }>('query-status')
      await qmp.execute('stop')
      try {
        for (const d of disks) await liveSnapshot(qmp, `d${d.userdevice}`, d.overlay)
        await saveState(qmp, statePath)
      } finally {
        if (status.running) await qmp.execute('cont')
      }
    })
  }

  async resizeDisk(uuid: string, userdevice: number, size: number): Promise<void> {
    await this.queued(uuid, () => resizeLive(this.qmp(uuid), `d${userdevice}`, size))
  }

  /** Live snapshot of a disk: the guest goes on writing to a new overlay. */
  async freezeDisk(uuid: string, userdevice: number, overlayPath: string): Promise<void> {
    await this.queued(uuid, () => liveSnapshot(this.qmp(uuid), `d${userdevice}`, overlayPath))
  }

  /** Streams into a running disk the data of its backing chain above `basePath`. */
  async streamDisk(uuid: string, userdevice: number, basePath: string | undefined): Promise<void> {
    await this.queued(uuid, () => streamInto(this.qmp(uuid), `d${userdevice}`, basePath))
  }

  devices(uuid: string): Promise<DeviceList> {
    return this.queued(uuid, () => listDevices(this.qmp(uuid)))
  }

  async reset(uuid: string): Promise<void> {
    await this.queued(uuid, () => this.qmp(uuid).execute('system_reset'))
  }

  async pause(uuid: string): Promise<void> {
    await this.queued(uuid, () => this.qmp(uuid).execute('stop'))
  }

  async unpause(uuid: string): Promise<void> {
    await this.queued(uuid, () => this.qmp(uuid).execute('cont'))
  }

  async setVcpus(uuid: string, count: number): Promise<void> {
    await this.queued(uuid, () => setVcpus(this.qmp(uuid), count))
  }

  private qmp(uuid: string) {
    const proc = this.running.get(uuid)
    if (!proc) throw Object.assign(new Error(`VM ${uuid} is not running here`), { code: 'VM_BAD_POWER_STATE', params: [uuid, 'running', 'halted'] })
    return proc.qmp
  }

  /** After a daemon restart: re-attach to the QEMUs of these VMs; returns those still running. */
  async reattach(vms: { uuid: string; devices: string[] }[]): Promise<string[]> {
    const alive: string[] = []
    for (const vm of vms) {
      const proc = await attachQemu(vmRunDir(this.host.runDir, vm.uuid), vm.uuid).catch(() => undefined)
      if (!proc) continue
      this.watch(proc, { uuid: vm.uuid, nics: vm.devices.map((device) => ({ device, mac: '', tap: tapName(vm.uuid, device) })) })
      alive.push(vm.uuid)
    }
    return alive
  }

  /** Closes our QMP connections without touching the VMs (daemon shutdown). */
  async detachAll(): Promise<void> {
    for (const [uuid, proc] of this.running) {
      this.stopping.add(uuid)
      await proc.qmp.close().catch(() => undefined)
    }
    this.running.clear()
  }
}

/** Shell-quotes a path for QEMU's exec: migration URIs (QEMU 7.2 has no file: URI). */
const shellQuote = (path: string) => `'${path.replace(/'/g, `'\\''`)}'`

async function waitForMigration(qmp: QemuProcess['qmp']): Promise<void> {
  for (;;) {
    const info = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate')
    if (info.status === 'completed') return
    if (info.status === 'failed' || info.status === 'cancelled') throw new Error(`saving or loading the VM state failed: ${info['error-desc'] ?? info.status}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function saveState(qmp: QemuProcess['qmp'], statePath: string): Promise<void> {
  // The default 128 MiB/s cap also throttles exec: migration (reference/qemu-lab.md §9).
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 8 * 1024 ** 3 })
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(statePath)}` })
  await waitForMigration(qmp)
}

async function loadState(qmp: QemuProcess['qmp'], statePath: string): Promise<void> {
  await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(statePath)}` })
  await waitForMigration(qmp)
}

/** Resolves when the QEMU's QMP connection closes (the process is ending). */
const closed = (proc: QemuProcess) => new Promise<void>((resolve) => (proc.qmp.closed ? resolve() : proc.qmp.once('close', () => resolve())))
