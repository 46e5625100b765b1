// The agent's storage calls: each names its SR by where it is on this host (type, directory,
// device) and goes to the driver of that SR type, and finds the files of the images the API
// layer names. How a VDI freezes for a snapshot or clone (live in its VM's QEMU, offline by its
// driver, or not at all for a snapshot's own image) and how a collection merges (in a running
// VM's QEMU or offline) are decided here. Copies and raw state files are file SR work.
import { smFailure } from '../storage/driver.js'
import { FileSr } from '../storage/file-sr.js'
import { getDriver, driverInfos } from '../storage/registry.js'
import type { CallHandlers, CheckpointDisk, Frozen, FreezeOutcome, FreezeRequest, FreezeResult, SrLocation, StartByImage, StartRequest, VdiRef, VmDisk, VmDiskByImage } from './contract.js'
import { encodeFailure } from './failure.js'

const driver = (sr: SrLocation) => getDriver(sr.type)

export const imagePath = ({ sr, location, format }: VdiRef): string => driver(sr).vdiPath(sr, location, format)

export const withPath = ({ image, ...disk }: VmDiskByImage): VmDisk => ({ ...disk, ...(image ? { path: imagePath(image) } : {}) })

export const withDiskPaths = (request: StartByImage): StartRequest => ({ ...request, disks: request.disks.map(withPath) })

/** What storage needs of the VMs running here: live snapshots and merges into running disks happen in their QEMU. */
export interface RunningDisks {
  isRunning(uuid: string): boolean
  freezeDisk(uuid: string, userdevice: number, overlayPath: string): Promise<void>
  streamDisk(uuid: string, userdevice: number, basePath: string | undefined): Promise<void>
}

/**
 * One disk's content frozen, its VDI going on at `next`: a running disk (`freezeLive` given) onto a
 * new overlay by its QEMU, unless its driver snapshots in place (RBD); a halted one by its driver.
 */
async function freezeDisk(sr: SrLocation, location: string, next: string, freezeLive?: (overlay: string) => Promise<void>): Promise<Frozen> {
  const d = driver(sr)
  if (!freezeLive || d.snapshotsInPlace) return d.snapshot(sr, location, next)
  await freezeLive(d.vdiPath(sr, next))
  return { frozen: location, location: next }
}

async function freeze(vms: RunningDisks, d: FreezeRequest, done: FreezeResult[]): Promise<void> {
  const sr = driver(d.sr)
  const live = d.live
  const frozen = d.immutable
    ? { frozen: d.location, location: d.location }
    : await freezeDisk(d.sr, d.location, d.next, live && ((overlay) => vms.freezeDisk(live.uuid, live.userdevice, overlay)))
  const result: FreezeResult = { ...frozen }
  done.push(result)
  result.image = d.clone ? await sr.clone(d.sr, frozen.frozen, d.clone) : await sr.vdiImage(d.sr, frozen.frozen)
}

/** A checkpoint's disks, frozen one after the other while the VM's vCPUs are stopped (`freezeLive`: by its QEMU). */
export async function freezeRunning(freezeLive: (userdevice: number, overlay: string) => Promise<void>, disks: CheckpointDisk[]): Promise<Frozen[]> {
  const frozen: Frozen[] = []
  for (const d of disks) frozen.push(await freezeDisk(d.sr, d.location, d.next, (overlay) => freezeLive(d.userdevice, overlay)))
  return frozen
}

/** VDI.snapshot and VDI.clone of any number of VDIs in one call: frozen in order, stopping at the first failure. */
async function freezeAll(vms: RunningDisks, disks: FreezeRequest[]): Promise<FreezeOutcome> {
  const outcome: FreezeOutcome = { done: [], usage: {} }
  for (const d of disks) {
    try {
      await freeze(vms, d, outcome.done)
    } catch (err) {
      outcome.failure = encodeFailure(err)
      break
    }
  }
  for (const d of disks.slice(0, outcome.done.length)) {
    const usage = outcome.usage[d.sr.path] ? undefined : await driver(d.sr).usage(d.sr).catch(() => undefined)
    if (usage) outcome.usage[d.sr.path] = usage
  }
  return outcome
}

export const storageMethods = (vms: RunningDisks) => ({
  'sr.drivers': async () => driverInfos(),
  'sr.probe': async ({ type, config }) => {
    const d = getDriver(type)
    if (!d.probe) throw smFailure('Unimplemented', `SR.probe of type ${type}`)
    return d.probe(config)
  },
  'sr.make': async (sr) => driver(sr).create(sr),
  'sr.attach': async (sr) => driver(sr).attach(sr),
  'sr.detach': async (sr) => driver(sr).detach(sr),
  'sr.remove': async (sr) => driver(sr).destroy(sr),
  'sr.usage': async (sr) => driver(sr).usage(sr),
  'sr.scan': async (sr) => driver(sr).scan(sr),
  'vdi.create': async (args) => driver(args).createVdi(args, args.size, args.nameLabel),
  'vdi.destroy': async (args) => driver(args).destroyVdi(args, args.location),
  'vdi.freeze': async ({ disks }) => freezeAll(vms, disks),
  'sr.gc': async ({ referenced, live, ...sr }) => {
    const tops = new Set(Object.keys(live).filter((location) => vms.isRunning(live[location]!.uuid)))
    return driver(sr).gc(sr, new Set(referenced), tops, async (child, newBacking) => {
      const disk = live[child]
      if (!disk || !vms.isRunning(disk.uuid)) return false
      await vms.streamDisk(disk.uuid, disk.userdevice, newBacking ? driver(sr).vdiPath(sr, newBacking) : undefined)
      return true
    })
  },
  'sr.tree': async ({ path }) => new FileSr(path).tree(),
  'vdi.resize': async (args) => driver(args).resize(args, args.location, args.size),
  'vdi.image': async (args) => driver(args).vdiImage(args, args.location),
  'vdi.path': async ({ location, format, ...sr }) => imagePath({ sr, location, format }),
  'vdi.copy': async ({ source, location, ...sr }) => driver(sr).importImage(sr, imagePath(source), source.format === 'raw' ? 'raw' : 'qcow2', location),
  'vdi.import-file': async ({ source, format, location, ...sr }) => driver(sr).importImage(sr, source, format, location),
  'vdi.copy-raw': async ({ path, from, to }) => new FileSr(path).copyRaw(from, to),
  'vdi.reserve-raw': async ({ path, location, size }) => new FileSr(path).reserveRaw(location, size),
}) satisfies Partial<CallHandlers>
