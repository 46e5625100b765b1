// The driver of Ceph RBD SRs (type rbd, beyond XCP-ng, as Proxmox has it): one RBD image per
// VDI, raw, in an RBD namespace named after the SR's uuid on a pool (device_config monitors,
// pool, user, key), so that several SRs share a pool without seeing each other's images.
// Snapshots and clones are RBD's own (clone format 2: a snapshot with clones can be deleted, it
// waits in the trash until they are gone); a clone whose chain of parents gets deep is
// flattened. QEMU reaches the images through librbd, the driver manages them with Ceph's `rbd`
// tool, both with a ceph.conf and a keyring the driver writes for the SR's cluster and user.
import { createHash, randomUUID } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runProgram } from '../lib/programs.js'
import { convertImage } from '../qemu/img.js'
import { smFailure, StorageError, type Frozen, type SrCapability, type SrDriver, type SrDriverInfo, type SrLocation, type SrProbe, type SrUsage, type VdiImage } from './driver.js'
import type { GcOutcome } from './gc.js'

const CAPABILITIES: readonly SrCapability[] = ['SR_PROBE', 'SR_UPDATE', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_UPDATE', 'VDI_CLONE', 'VDI_SNAPSHOT', 'VDI_RESIZE', 'THIN_PROVISIONING']

/** A clone is flattened (made independent of its parents) once it would read through this many images. */
export const MAX_CLONE_DEPTH = 8

const NAME = /^[0-9a-f-]{36}$/
const SNAPSHOT = /^([0-9a-f-]{36})@([0-9a-f-]{36})$/

/** An SR's place: `rbd://<monitor>[,<monitor>…]/<pool>/<namespace>` with the user and key from its device_config. */
export interface RbdPlace {
  monitors: string
  pool: string
  namespace: string
  user: string
  key: string
}

export function parseRbdLocation(sr: SrLocation): RbdPlace {
  const m = /^rbd:\/\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(sr.path)
  if (!m) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `not an RBD SR location: ${sr.path}`])
  return { monitors: m[1]!, pool: m[2]!, namespace: m[3]!, user: sr.config?.user || 'admin', key: sr.config?.key ?? '' }
}

/** The ceph.conf (and keyring) of a cluster and user, written once per process in a private directory. */
function confFile(place: Pick<RbdPlace, 'monitors' | 'user' | 'key'>): string {
  const id = createHash('sha256').update(`${place.monitors}\n${place.user}\n${place.key}`).digest('hex').slice(0, 16)
  const dir = join(tmpdir(), 'flotilla-ceph', id)
  const conf = join(dir, 'ceph.conf')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  writeFileSync(join(dir, 'keyring'), `[client.${place.user}]\n\tkey = ${place.key}\n`, { mode: 0o600 })
  // clone format 2: snapshots with clones can go; a cluster that does not answer is an error after 15 s, not a hang
  writeFileSync(conf, `[global]\n\tmon host = ${place.monitors}\n\tkeyring = ${join(dir, 'keyring')}\n\trbd default clone format = 2\n\tclient mount timeout = 15\n\trados mon op timeout = 15\n\trados osd op timeout = 30\n\tlog file = /dev/null\n`, { mode: 0o600 })
  return conf
}

/** Runs `rbd` (or `ceph`) for the SR's cluster and user; a failure is an SR_BACKEND_FAILURE with what the tool said. */
async function tool(program: 'rbd' | 'ceph', place: Pick<RbdPlace, 'monitors' | 'user' | 'key'>, args: string[]): Promise<string> {
  try {
    const { stdout } = await runProgram(program, ['-c', confFile(place), '--id', place.user, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout
  } catch (err) {
    const stderr = String((err as { stderr?: string }).stderr ?? '').trim()
    throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `${program} ${args[0] ?? ''} ${args[1] ?? ''}: ${stderr.split('\n').filter(Boolean).at(-1) ?? (err as Error).message}`])
  }
}

const rbd = (place: RbdPlace, args: string[]) => tool('rbd', place, args)
const json = async <T>(place: RbdPlace, args: string[]): Promise<T> => JSON.parse(await rbd(place, [...args, '--format', 'json'])) as T

/** An image (or `image@snapshot`) of the SR as rbd names it. */
function spec(place: RbdPlace, location: string): string {
  if (!NAME.test(location) && !SNAPSHOT.test(location)) throw new StorageError('VDI_MISSING', [`rbd://${place.pool}/${place.namespace}`, location])
  return `${place.pool}/${place.namespace}/${location}`
}

/** The image metadata key that marks a VDI's image destroyed while snapshots still read it. */
const DESTROYED = 'flotilla.destroyed'

const isDestroyed = async (place: RbdPlace, image: string) =>
  Boolean((await json<Record<string, string>>(place, ['image-meta', 'list', spec(place, image)]).catch((): Record<string, string> => ({})))[DESTROYED])

/** How many snapshots users made of an image (not those RBD keeps in its trash for clones). */
/** An image's snapshots: the VDIs' and those removed but kept in RBD's trash for their clones. */
async function snapshotCount(place: RbdPlace, image: string): Promise<number> {
  return (await json<unknown[]>(place, ['snap', 'ls', '--all', spec(place, image)]).catch(() => [])).length
}

/** A destroyed VDI's image goes once nothing reads it: no snapshot VDI, no clone of a removed snapshot. */
async function removeIfUnread(place: RbdPlace, image: string): Promise<void> {
  if ((await isDestroyed(place, image)) && (await snapshotCount(place, image)) === 0) await rbd(place, ['rm', '--no-progress', spec(place, image)])
}

interface RbdInfo {
  size: number
  parent?: { pool: string; pool_namespace?: string; image: string; snapshot: string }
}

export class RbdSrDriver implements SrDriver {
  /** A snapshot is RBD's, also of a running VM's disk: QEMU need not move the disk onto an overlay. */
  readonly snapshotsInPlace = true

  info(): SrDriverInfo {
    return { type: 'rbd', name: 'Ceph RBD', capabilities: CAPABILITIES }
  }

  async create(sr: SrLocation): Promise<void> {
    const place = parseRbdLocation(sr)
    const namespaces = await json<{ name: string }[]>(place, ['namespace', 'ls', place.pool])
    if (!namespaces.some((n) => n.name === place.namespace)) await rbd(place, ['namespace', 'create', `${place.pool}/${place.namespace}`])
  }

  /** Checks the cluster answers with this user's key and the SR's namespace is on the pool. */
  async attach(sr: SrLocation): Promise<void> {
    const place = parseRbdLocation(sr)
    const namespaces = await json<{ name: string }[]>(place, ['namespace', 'ls', place.pool])
    if (!namespaces.some((n) => n.name === place.namespace)) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `the SR's RBD namespace ${place.namespace} is not on pool ${place.pool}`])
  }

  async detach(): Promise<void> {}

  /** Removes every image (with its snapshots) and the namespace. */
  async destroy(sr: SrLocation): Promise<void> {
    const place = parseRbdLocation(sr)
    // clones before their parents: an image with clones of its snapshots cannot go first
    for (let round = 0; round < MAX_CLONE_DEPTH + 2; round++) {
      const images = await json<{ image: string }[]>(place, ['ls', '-l', `${place.pool}/${place.namespace}`]).catch(() => [])
      const names = [...new Set(images.map((i) => i.image))]
      if (names.length === 0) break
      for (const name of names) {
        await rbd(place, ['snap', 'purge', `${place.pool}/${place.namespace}/${name}`]).catch(() => undefined)
        await rbd(place, ['rm', '--no-progress', `${place.pool}/${place.namespace}/${name}`]).catch(() => undefined)
      }
    }
    await rbd(place, ['trash', 'purge', `${place.pool}/${place.namespace}`]).catch(() => undefined)
    await rbd(place, ['namespace', 'remove', `${place.pool}/${place.namespace}`])
  }

  async usage(sr: SrLocation): Promise<SrUsage> {
    const place = parseRbdLocation(sr)
    const df = JSON.parse(await tool('ceph', place, ['df', '--format', 'json'])) as { pools: { name: string; stats: { stored: number; max_avail: number } }[] }
    const pool = df.pools.find((p) => p.name === place.pool)
    if (!pool) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `no pool ${place.pool} on the cluster`])
    return { physicalSize: pool.stats.stored + pool.stats.max_avail, physicalUtilisation: pool.stats.stored, free: pool.stats.max_avail }
  }

  /** The images that can be VDIs: not snapshots, not destroyed ones kept for their snapshots. */
  async scan(sr: SrLocation): Promise<VdiImage[]> {
    const place = parseRbdLocation(sr)
    const images = await json<{ image: string; size: number; snapshot?: string }[]>(place, ['ls', '-l', `${place.pool}/${place.namespace}`])
    const out: VdiImage[] = []
    for (const i of images) if (!i.snapshot && NAME.test(i.image) && !(await isDestroyed(place, i.image))) out.push({ location: i.image, virtualSize: i.size, physicalUtilisation: 0, format: 'raw' })
    return out
  }

  /** Nothing to merge: RBD keeps its own snapshots and clones. */
  async gc(): Promise<GcOutcome> {
    return { done: [], deferred: false }
  }

  /** The image as QEMU and qemu-img open it (librbd, with the SR's conf and user). */
  vdiPath(sr: SrLocation, location: string): string {
    const place = parseRbdLocation(sr)
    return `rbd:${spec(place, location)}:conf=${confFile(place)}:id=${place.user}`
  }

  async vdiImage(sr: SrLocation, location: string): Promise<VdiImage> {
    const place = parseRbdLocation(sr)
    const info = await json<RbdInfo>(place, ['info', spec(place, location)]).catch((err: Error) => {
      throw /No such file|does not exist|error opening/i.test(err.message) ? new StorageError('VDI_MISSING', [sr.path, location]) : err
    })
    const du = await json<{ images: { name: string; snapshot?: string; used_size: number }[] }>(place, ['du', spec(place, location)]).catch(() => ({ images: [] }))
    const used = du.images.reduce((n, i) => n + (i.used_size ?? 0), 0)
    return { location, virtualSize: info.size, physicalUtilisation: used, format: 'raw' }
  }

  async createVdi(sr: SrLocation, size: number): Promise<VdiImage> {
    const place = parseRbdLocation(sr)
    const location = randomUUID()
    await rbd(place, ['create', '--size', `${Math.ceil(size / 2 ** 20)}M`, spec(place, location)])
    if (size % 2 ** 20 !== 0) await rbd(place, ['resize', '--no-progress', '--size', `${size}B`, spec(place, location)]).catch(() => undefined)
    return this.vdiImage(sr, location)
  }

  /**
   * A VDI's image goes at once, unless snapshots still read it (snapshot VDIs, or removed ones a
   * clone builds on, which RBD keeps in its trash): then it is only marked destroyed (hidden from
   * scans) and goes with the last of them, as a qcow2 VDI's base stays for its snapshots. Removing
   * a clone's image lets RBD drop the trashed snapshot it built on, and so perhaps its parent.
   */
  async destroyVdi(sr: SrLocation, location: string): Promise<void> {
    const place = parseRbdLocation(sr)
    const snapshot = SNAPSHOT.exec(location)
    if (snapshot) {
      await rbd(place, ['snap', 'rm', '--no-progress', spec(place, location)])
      await removeIfUnread(place, snapshot[1]!)
      return
    }
    if ((await snapshotCount(place, location)) > 0) {
      await rbd(place, ['image-meta', 'set', spec(place, location), DESTROYED, '1'])
      return
    }
    const { parent } = await json<RbdInfo>(place, ['info', spec(place, location)])
    await rbd(place, ['rm', '--no-progress', spec(place, location)])
    if (parent && parent.pool === place.pool && (parent.pool_namespace ?? '') === place.namespace) await removeIfUnread(place, parent.image)
  }

  /** An RBD snapshot, named `next`: the VDI stays where it is, the snapshot is `location@next`. */
  async snapshot(sr: SrLocation, location: string, next: string): Promise<Frozen> {
    const place = parseRbdLocation(sr)
    if (SNAPSHOT.test(location)) return { frozen: location, location }
    await rbd(place, ['snap', 'create', '--no-progress', `${spec(place, location)}@${next}`])
    return { frozen: `${location}@${next}`, location }
  }

  /** A copy-on-write clone of a snapshot, flattened once its chain of parents is deep. */
  async clone(sr: SrLocation, base: string, location: string): Promise<VdiImage> {
    const place = parseRbdLocation(sr)
    if (!SNAPSHOT.test(base)) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `an RBD clone builds on a snapshot, not on ${base}`])
    await rbd(place, ['clone', spec(place, base), spec(place, location)])
    if ((await this.depth(place, location)) > MAX_CLONE_DEPTH) await rbd(place, ['flatten', '--no-progress', spec(place, location)])
    return this.vdiImage(sr, location)
  }

  /** How many images a read of `location` may go through: itself and its parents. */
  private async depth(place: RbdPlace, location: string): Promise<number> {
    let depth = 1
    for (let name = location; depth <= MAX_CLONE_DEPTH + 1; depth++) {
      const info = await json<RbdInfo>(place, ['info', spec(place, name)])
      if (!info.parent) return depth
      name = info.parent.image
    }
    return depth
  }

  async resize(sr: SrLocation, location: string, size: number): Promise<VdiImage> {
    const place = parseRbdLocation(sr)
    await rbd(place, ['resize', '--no-progress', '--size', `${size}B`, spec(place, location)])
    return this.vdiImage(sr, location)
  }

  /** A full copy of an image file (any format) as the SR's image `location` (VM.copy, imports). */
  async importImage(sr: SrLocation, source: string, sourceFormat: 'qcow2' | 'raw', location: string): Promise<VdiImage> {
    await convertImage({ source, sourceFormat, target: this.vdiPath(sr, location), targetFormat: 'raw' })
    return this.vdiImage(sr, location)
  }

  /**
   * With monitors and a user's key only: the cluster's pools, as a failure that needs the pool
   * (xapi's NFS driver answers so for a server without a path); with the pool: the SRs on it,
   * its namespaces named as SR uuids.
   */
  async probe(config: Record<string, string>): Promise<SrProbe> {
    if (!config.monitors) throw smFailure('ConfigServerMissing', 'device_config needs monitors')
    const place: RbdPlace = { monitors: config.monitors, pool: config.pool ?? '', namespace: '', user: config.user || 'admin', key: config.key ?? '' }
    if (!config.pool) {
      const pools = JSON.parse(await tool('ceph', place, ['osd', 'pool', 'ls', '--format', 'json'])) as string[]
      return { pools }
    }
    const namespaces = await json<{ name: string }[]>(place, ['namespace', 'ls', place.pool])
    return { srs: namespaces.map((n) => n.name).filter((n) => NAME.test(n)) }
  }
}
