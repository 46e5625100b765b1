// The files of a file-based SR, wherever the directory is: on this host's filesystem, or on an
// NFS export reached through the userspace client (nfs-client.ts) with QEMU and qemu-img opening
// the images by nfs:// URL. The image logic (file-sr.ts) is the same on both.
import { constants } from 'node:fs'
import { copyFile, mkdir, readdir, rename, rm, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import { convertImage } from '../qemu/img.js'
import { smFailure, StorageError, type SrUsage } from './driver.js'
import { NfsError, NfsExport } from './nfs-client.js'

export interface SrFiles {
  /** Where the SR is: its directory, or its nfs://server/export/dir URL. */
  readonly where: string
  /** The name QEMU and qemu-img open a file of the SR by. */
  file(name: string): string
  /** Makes the directory if it is not there. */
  ensure(): Promise<void>
  /** The names of the files in the directory. */
  names(): Promise<string[]>
  /** Bytes a file takes on its storage, or undefined if it is not there. */
  allocated(name: string): Promise<number | undefined>
  usage(): Promise<SrUsage>
  /** Removes a file; one already gone is fine. */
  remove(name: string): Promise<void>
  /** Renames a file over another, atomically. */
  rename(from: string, to: string): Promise<void>
  /** A copy of a raw file. */
  copyRaw(from: string, to: string): Promise<void>
  /**
   * Whether `qemu-img commit` can write an overlay into its backing file here: QEMU's NFS driver
   * cannot reopen a backing image read-write (“Cannot open a read-only mount as read-write”).
   */
  readonly commitsIntoBacking: boolean
}

export class LocalFiles implements SrFiles {
  readonly commitsIntoBacking = true
  constructor(readonly where: string) {}

  file = (name: string) => join(this.where, name)

  async ensure(): Promise<void> {
    await mkdir(this.where, { recursive: true, mode: 0o700 })
  }

  names = () => readdir(this.where)

  async allocated(name: string): Promise<number | undefined> {
    const st = await stat(this.file(name)).catch(() => undefined)
    return st && st.blocks * 512
  }

  async usage(): Promise<SrUsage> {
    const s = await statfs(this.where)
    const size = s.blocks * s.bsize
    return { physicalSize: size, physicalUtilisation: size - s.bavail * s.bsize, free: s.bavail * s.bsize }
  }

  remove = (name: string) => rm(this.file(name), { force: true })
  rename = (from: string, to: string) => rename(this.file(from), this.file(to))
  copyRaw = (from: string, to: string) => copyFile(this.file(from), this.file(to), constants.COPYFILE_FICLONE)
}

/** An nfs:// SR location taken apart: the SR is the URL's last directory, on the export above it (xapi's serverpath/<SR uuid>). */
export function parseNfsLocation(url: string): { server: string; exportPath: string; dir: string } {
  const m = /^nfs:\/\/([^/]+)(\/.*)$/.exec(url)
  const parts = m ? m[2]!.split('/').filter(Boolean) : []
  if (!m || parts.length < 2 || parts.some((p) => p === '.' || p === '..')) throw new StorageError('SR_BACKEND_FAILURE', ['1', '', `not an NFS SR location: ${url}`])
  return { server: m[1]!, exportPath: `/${parts.slice(0, -1).join('/')}`, dir: parts.at(-1)! }
}

/** The mounted exports, one connection per server and export for the whole process. */
const mounts = new Map<string, Promise<NfsExport>>()

/** An NFS failure as the XenAPI error xapi's NFS driver gives: an NFS mount error, with the reason. */
function backendFailure(err: unknown): unknown {
  return err instanceof NfsError ? smFailure('NFSMount', err.message) : err
}

export class NfsFiles implements SrFiles {
  readonly commitsIntoBacking = false
  private readonly place: ReturnType<typeof parseNfsLocation>

  constructor(readonly where: string) {
    this.place = parseNfsLocation(where)
  }

  file = (name: string) => `${this.where}/${name}`
  private path = (name?: string) => (name ? `${this.place.dir}/${name}` : this.place.dir)

  /** Runs `fn` on the mounted export; a broken connection is dropped and tried once more on a fresh one. */
  private async on<T>(fn: (ex: NfsExport) => Promise<T>): Promise<T> {
    const key = `${this.place.server}:${this.place.exportPath}`
    for (let attempt = 0; ; attempt++) {
      let mounted = mounts.get(key)
      if (!mounted) {
        mounted = NfsExport.mount(this.place.server, this.place.exportPath)
        mounts.set(key, mounted)
        mounted.catch(() => mounts.delete(key))
      }
      try {
        return await fn(await mounted)
      } catch (err) {
        // an answer of the server (a status) is final; a lost connection may just be an old one
        if (!(err instanceof NfsError) || err.status !== undefined || attempt > 0) throw backendFailure(err)
        if (mounts.get(key) === mounted) mounts.delete(key)
        void mounted.then((ex) => ex.close(), () => undefined)
      }
    }
  }

  ensure = () => this.on((ex) => ex.mkdirs(this.path()))
  /** Whether the SR's directory is on the export. */
  exists = () => this.on(async (ex) => (await ex.stat(this.path()))?.isDirectory === true)
  names = () => this.on(async (ex) => [...(await ex.list(this.path())).keys()])
  allocated = (name: string) => this.on(async (ex) => (await ex.stat(this.path(name)))?.used)

  async usage(): Promise<SrUsage> {
    const { total, available } = await this.on((ex) => ex.space())
    return { physicalSize: total, physicalUtilisation: total - available, free: available }
  }

  remove = (name: string) => this.on((ex) => ex.remove(this.path(name)))
  rename = (from: string, to: string) => this.on((ex) => ex.rename(this.path(from), this.path(to)))
  copyRaw = (from: string, to: string) => convertImage({ source: this.file(from), sourceFormat: 'raw', target: this.file(to), targetFormat: 'raw' })
  /** Removes the SR's directory with all it holds. */
  removeAll = () => this.on((ex) => ex.removeTree(this.path()))
}

/** The files of the SR at `where` (a directory, or an nfs:// URL). */
export const srFiles = (where: string): SrFiles => (where.startsWith('nfs://') ? new NfsFiles(where) : new LocalFiles(where))
