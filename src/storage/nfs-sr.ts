// The driver of NFS SRs (type nfs, as xapi's NFSSR): the SR is a directory named after its uuid
// on an export (device_config server and serverpath), holding the same qcow2 images as a local
// SR. Every host of the pool plugs it at once: QEMU and qemu-img reach the images through
// QEMU's own NFS client (nfs:// URLs), and the directory is managed through Flotilla's
// userspace client, so a host needs no kernel NFS client and nothing is mounted.
import { FileImagesDriver } from './file-driver.js'
import { FileSr } from './file-sr.js'
import { FILE_SR_CAPABILITIES } from './local-sr.js'
import { listExports, NfsError, NfsExport } from './nfs-client.js'
import { NfsFiles } from './sr-files.js'
import { smFailure, type SrDriverInfo, type SrLocation, type SrProbe } from './driver.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export class NfsSrDriver extends FileImagesDriver {
  info(): SrDriverInfo {
    return { type: 'nfs', name: 'NFS VHD', capabilities: FILE_SR_CAPABILITIES }
  }

  async create(sr: SrLocation): Promise<void> {
    await new FileSr(sr.path).attach()
  }

  /** Checks the server answers and the SR's directory is there (an introduced SR's too). */
  async attach(sr: SrLocation): Promise<void> {
    if (!(await new NfsFiles(sr.path).exists())) throw smFailure('NFSMount', `the SR's directory is not on the export: ${sr.path}`)
  }

  /** Nothing is mounted: what the host had open of the SR its VMs and tools have closed. */
  async detach(): Promise<void> {}

  destroy = (sr: SrLocation) => new NfsFiles(sr.path).removeAll()

  /** With a server only: its exports; with a serverpath too: the SRs there, the directories named as SR uuids. */
  async probe(config: Record<string, string>): Promise<SrProbe> {
    const server = config.server
    if (!server) throw smFailure('ConfigServerMissing')
    if (!config.serverpath) {
      try {
        return { exports: await listExports(server) }
      } catch (err) {
        throw smFailure('NFSTarget', (err as Error).message)
      }
    }
    let ex: NfsExport | undefined
    try {
      ex = await NfsExport.mount(server, config.serverpath)
      const entries = await ex.list('')
      return { srs: [...entries].filter(([name, st]) => st.isDirectory && UUID.test(name)).map(([name]) => name) }
    } catch (err) {
      throw err instanceof NfsError ? smFailure('NFSMount', err.message) : err
    } finally {
      ex?.close()
    }
  }
}
