// The driver of ZFS SRs (type zfs, experimental, as XCP-ng's ZFSSR): a file SR in a mounted ZFS
// dataset the administrator made (device_config location, its mountpoint or a directory in it),
// so the images get ZFS's checksums, compression and snapshots of the whole dataset. Kernel ZFS
// and zfs-fuse (which this machine runs: no kernel modules) both mount as ZFS.
import { readFile, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { FileImagesDriver } from './file-driver.js'
import { FileSr } from './file-sr.js'
import { FILE_SR_CAPABILITIES } from './local-sr.js'
import { StorageError, type SrDriverInfo, type SrLocation } from './driver.js'

const ZFS_TYPES = new Set(['zfs', 'fuse.zfs'])

/** The filesystem type of the mount `path` is on (the longest mountpoint that contains it). */
export function filesystemOf(mounts: string, path: string): string | undefined {
  let best: { point: string; type: string } | undefined
  for (const line of mounts.split('\n')) {
    const [, point, type] = line.split(' ')
    if (!point || !type) continue
    const inside = path === point || path.startsWith(point.endsWith('/') ? point : `${point}/`)
    if (inside && (!best || point.length > best.point.length)) best = { point, type }
  }
  return best?.type
}

async function assertOnZfs(path: string): Promise<void> {
  const type = filesystemOf(await readFile('/proc/mounts', 'utf8'), path)
  if (!type || !ZFS_TYPES.has(type)) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `${path} is not on a mounted ZFS dataset (it is on ${type ?? 'nothing mounted'})`])
}

export class ZfsSrDriver extends FileImagesDriver {
  info(): SrDriverInfo {
    return { type: 'zfs', name: 'ZFS', capabilities: FILE_SR_CAPABILITIES }
  }

  async create(sr: SrLocation): Promise<void> {
    await assertOnZfs(sr.path)
    await new FileSr(sr.path).attach()
  }

  attach = (sr: SrLocation) => this.create(sr)

  async detach(): Promise<void> {}

  /** The SR's images go; the dataset, the administrator's, stays. */
  async destroy(sr: SrLocation): Promise<void> {
    const names = await readdir(sr.path).catch(() => [])
    await Promise.all(names.filter((n) => /^[0-9a-f-]{36}\.(qcow2|raw)$/.test(n)).map((n) => rm(join(sr.path, n), { force: true })))
  }
}
