// The real hypervisor: each VM a detached QEMU (process.ts) driven over its QMP socket.
import type { HypervisorBackend, MigrateOptions, RunningVm, StopReason } from './backend.js'
import { liveSnapshot, resizeLive, streamInto } from './blockjobs.js'
import type { QemuDisk, QemuNic, QemuVmConfig } from './config.js'
import { classifyEvent } from './events.js'
import { attachDisk, attachNic, detachDisk, detachNic, ejectMedium, freeHotplugPort, insertMedium, listDevices, setVcpus, type DeviceList } from './hotplug.js'
import { attachQemu, killQemu, launchQemu, runningUuids, type QemuProcess } from './process.js'
import type { QmpEvent } from './qmp.js'
import { listenForMigration, receivedMigration, sendMigration, type MigrationStats } from './migration.js'
import { abortMirrors, exportDisks, finishMirrors, mirrorToExports, moveDisk, stopExports } from './mirror.js'
import { loadState, saveState } from './state.js'
import { withUndo } from '../lib/undo.js'

/** How long the mirrors of a storage motion may take to send the writes made while the memory went across. */
const MIRROR_FINISH_MS = 60_000

export const qemuBackend: HypervisorBackend = {
  async launch(config: QemuVmConfig, incomingState?: string): Promise<RunningVm> {
    if (incomingState === undefined) return new QemuVm(await launchQemu(config))
    // A resume: QEMU waits for the state with its vCPUs stopped, then runs unless asked to stay paused.
    const proc = await launchQemu({ ...config, paused: true, incoming: true })
    const vm = new QemuVm(proc)
    return withUndo('resume', async (undo) => {
      undo.push(`QEMU ${proc.pid}`, () => killQemu(proc, 0))
      await loadState(proc.qmp, incomingState)
      if (!config.paused) await proc.qmp.execute('cont')
      return vm
    })
  },

  async receive(config: QemuVmConfig, address: string, exports: string[] = []): Promise<{ vm: RunningVm; port: number; nbdPort?: number }> {
    const proc = await launchQemu({ ...config, paused: true, incoming: true })
    return withUndo('receive a migration', async (undo) => {
      undo.push(`QEMU ${proc.pid}`, () => killQemu(proc, 0))
      const nbdPort = exports.length ? await exportDisks(proc.qmp, address, exports) : undefined
      return { vm: new QemuVm(proc), port: await listenForMigration(proc.qmp, address), ...(nbdPort ? { nbdPort } : {}) }
    })
  },

  survivors: (vmsDir: string) => runningUuids(vmsDir),

  async attach(runDir: string, uuid: string): Promise<RunningVm | undefined> {
    const proc = await attachQemu(runDir, uuid)
    return proc && new QemuVm(proc)
  },
}

class QemuVm implements RunningVm {
  readonly stopped: Promise<StopReason>
  private readonly ioErrorListeners: ((device: string, noSpace: boolean) => void)[] = []

  constructor(private readonly proc: QemuProcess) {
    let reason: StopReason = 'killed'
    proc.qmp.on('event', (e: QmpEvent) => {
      const meaning = classifyEvent(reason, e)
      reason = meaning.reason
      const pause = meaning.ioErrorPause
      if (pause) for (const listener of this.ioErrorListeners) listener(pause.device, pause.noSpace)
    })
    this.stopped = new Promise((resolve) => (proc.qmp.closed ? resolve(reason) : proc.qmp.once('close', () => resolve(reason))))
  }

  get pid(): number {
    return this.proc.pid
  }

  get uuid(): string {
    return this.proc.uuid
  }

  private get qmp() {
    return this.proc.qmp
  }

  consoleSocket(protocol: 'rfb' | 'vt100'): string {
    return protocol === 'rfb' ? this.proc.paths.vnc : this.proc.paths.serialSocket
  }

  onPausedOnIoError(listener: (device: string, noSpace: boolean) => void): void {
    this.ioErrorListeners.push(listener)
  }

  async powerButton(): Promise<void> {
    await this.qmp.execute('system_powerdown')
  }

  async quit(): Promise<void> {
    await this.qmp.execute('quit')
  }

  kill(graceMs: number): Promise<void> {
    return killQemu(this.proc, graceMs)
  }

  detach(): Promise<void> {
    return this.qmp.close()
  }

  async reset(): Promise<void> {
    await this.qmp.execute('system_reset')
  }

  async pause(): Promise<void> {
    await this.qmp.execute('stop')
  }

  async unpause(): Promise<void> {
    await this.qmp.execute('cont')
  }

  async isRunning(): Promise<boolean> {
    return (await this.qmp.execute<{ running: boolean }>('query-status')).running
  }

  saveState(statePath: string): Promise<void> {
    return saveState(this.qmp, statePath)
  }

  async migrateTo(address: string, port: number, opts: MigrateOptions): Promise<MigrationStats> {
    const mirror = opts.mirror
    if (!mirror) return sendMigration(this.qmp, address, port, opts)
    const wasRunning = await this.isRunning()
    await mirrorToExports(this.qmp, address, mirror.port, mirror.nodes, opts)
    let sent = false
    try {
      const stats = await sendMigration(this.qmp, address, port, opts)
      sent = true
      await finishMirrors(this.qmp, mirror.nodes, MIRROR_FINISH_MS)
      return stats
    } catch (err) {
      await abortMirrors(this.qmp, mirror.nodes)
      // The memory went but the disks' last writes did not: the VM goes on here, where its disks are whole.
      if (sent && wasRunning) await this.qmp.execute('cont')
      throw err
    }
  }

  async received(timeoutMs: number): Promise<void> {
    await receivedMigration(this.qmp, timeoutMs)
    await stopExports(this.qmp)
  }

  moveDisk(node: string, target: { path: string; format: QemuDisk['format'] }, stallMs: number): Promise<void> {
    return moveDisk(this.qmp, node, target, { stallMs })
  }

  freezeDisk(node: string, overlayPath: string): Promise<void> {
    return liveSnapshot(this.qmp, node, overlayPath)
  }

  streamDisk(node: string, basePath: string | undefined): Promise<void> {
    return streamInto(this.qmp, node, basePath)
  }

  resizeDisk(node: string, size: number): Promise<void> {
    return resizeLive(this.qmp, node, size)
  }

  async plugDisk(disk: QemuDisk, hotplugPorts: number): Promise<void> {
    await attachDisk(this.qmp, disk, await freeHotplugPort(this.qmp, hotplugPorts))
  }

  unplugDisk(node: string): Promise<void> {
    return detachDisk(this.qmp, node)
  }

  insertMedium(node: string, path: string, format: QemuDisk['format']): Promise<void> {
    return insertMedium(this.qmp, node, path, format)
  }

  ejectMedium(node: string): Promise<void> {
    return ejectMedium(this.qmp, node)
  }

  async plugNic(nic: QemuNic, hotplugPorts: number): Promise<void> {
    await attachNic(this.qmp, nic, await freeHotplugPort(this.qmp, hotplugPorts))
  }

  unplugNic(id: string): Promise<void> {
    return detachNic(this.qmp, id)
  }

  setVcpus(count: number): Promise<void> {
    return setVcpus(this.qmp, count)
  }

  devices(): Promise<DeviceList> {
    return listDevices(this.qmp)
  }
}
