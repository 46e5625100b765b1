// What the host agent does to a VM's hypervisor, in the agent's terms: one interface, so that
// the agent's queueing, NVRAM and bookkeeping run the same on QEMU (qemu-backend.ts, the real
// path) and on the in-memory simulator (agent/sim, for tests). Every QMP command name and the
// meaning of QEMU's events stay below this line, in qemu/.
import type { QemuDisk, QemuNic, QemuVmConfig } from './config.js'
import type { DeviceList } from './hotplug.js'
import type { MigrationStats } from './migration.js'

export type { DeviceList, MigrationStats }

/** Why a VM stopped on its own: the guest powered off, rebooted (with reboot = halt), crashed, or its process went away. */
export type StopReason = 'shutdown' | 'reboot' | 'crash' | 'killed'

export interface MigrateOptions {
  stallMs: number
  signal?: AbortSignal
  mirror?: { port: number; nodes: string[] }
}

export interface HypervisorBackend {
  /**
   * Starts a VM as `config` describes it; resolves once it runs (or waits, with `config.paused`).
   * With `incomingState`, the VM continues from that saved state instead of booting.
   */
  launch(config: QemuVmConfig, incomingState?: string): Promise<RunningVm>
  /**
   * Starts a VM as `config` describes it to receive a live migration: vCPUs stopped, listening on
   * `address` (the port it picked returned); the disks `exports` (by node) served over NBD for the
   * source's mirrors (on `nbdPort`).
   */
  receive(config: QemuVmConfig, address: string, exports?: string[]): Promise<{ vm: RunningVm; port: number; nbdPort?: number }>
  /** The uuids of the VMs that still run from run directories under `vmsDir` (after a daemon restart, also those no record places here). */
  survivors(vmsDir: string): Promise<string[]>
  /** Finds the VM `uuid` again after a daemon restart (it outlives the daemon); undefined if it no longer runs. */
  attach(runDir: string, uuid: string): Promise<RunningVm | undefined>
}

/** One running VM, as long as the agent holds a link to it. Disks and NICs are named by their QemuDisk.node / QemuNic.id. */
export interface RunningVm {
  readonly pid: number
  readonly uuid: string
  /** Settles once the VM's process is gone or our link to it closed, with why the VM stopped. */
  readonly stopped: Promise<StopReason>
  /** The VNC (rfb) or serial (vt100) console socket. */
  consoleSocket(protocol: 'rfb' | 'vt100'): string
  /** `listener` hears of every pause the VM made itself on a failed disk write (noSpace: ENOSPC, its SR is full). */
  onPausedOnIoError(listener: (device: string, noSpace: boolean) => void): void

  /** Presses the ACPI power button (the guest decides). */
  powerButton(): Promise<void>
  /** Asks the hypervisor to end the VM now (rejects if it cannot be asked). */
  quit(): Promise<void>
  /** Ends the VM's process by signal (SIGKILL after `graceMs`), if it is still this VM's. */
  kill(graceMs: number): Promise<void>
  /** Closes our link without touching the VM (daemon shutdown). */
  detach(): Promise<void>

  reset(): Promise<void>
  pause(): Promise<void>
  unpause(): Promise<void>
  /** Whether the vCPUs run (false while paused). */
  isRunning(): Promise<boolean>
  /**
   * Sends the VM live to a destination listening at address:port: once it resolves the VM is
   * stopped here; if it rejects, the VM runs on here. With `mirror`, those disks (by node) are
   * first mirrored to the destination's NBD exports at address:mirror.port.
   */
  migrateTo(address: string, port: number, opts: MigrateOptions): Promise<MigrationStats>
  /** On a migration destination: waits until the whole stream is in (the vCPUs still stopped), then closes the NBD exports. */
  received(timeoutMs: number): Promise<void>
  /** Saves memory and device state to `statePath` (the agent stops the vCPUs first, for a consistent image). */
  saveState(statePath: string): Promise<void>

  /** Live snapshot: from now on the guest writes to a new overlay at `overlayPath` on top of the disk's current image. */
  freezeDisk(node: string, overlayPath: string): Promise<void>
  /** Copies into the disk's current image the data of its backing chain above `basePath`, which then becomes its backing (or nothing). */
  streamDisk(node: string, basePath: string | undefined): Promise<void>
  resizeDisk(node: string, size: number): Promise<void>
  /** Moves a disk live onto the (empty, same-size) image at `target`: once it resolves the guest uses only that; if it rejects, only the old one. */
  moveDisk(node: string, target: { path: string; format: QemuDisk['format'] }, stallMs: number): Promise<void>
  /** Hot-plugs a disk into the first free one of the VM's `hotplugPorts` spare ports. */
  plugDisk(disk: QemuDisk, hotplugPorts: number): Promise<void>
  unplugDisk(node: string): Promise<void>
  insertMedium(node: string, path: string, format: QemuDisk['format']): Promise<void>
  ejectMedium(node: string): Promise<void>
  /** Hot-plugs a NIC (its tap already exists) into the first free one of the VM's `hotplugPorts` spare ports. */
  plugNic(nic: QemuNic, hotplugPorts: number): Promise<void>
  unplugNic(id: string): Promise<void>
  setVcpus(count: number): Promise<void>
  /** What the hypervisor itself says the VM has. */
  devices(): Promise<DeviceList>
}
