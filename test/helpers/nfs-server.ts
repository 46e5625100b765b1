// A real NFS server for a lab's hosts: nfs-ganesha (FSAL_VFS, NFSv3) with its portmapper
// (rpcbind) in the lab's storage namespace, exporting a directory of the lab. rpcbind's socket
// and state live in /run, which every namespace shares, so both run in a mount namespace of
// their own with a private /run: two labs' servers never register with each other's rpcbind
// (pool-lab.md §5: "run only one rpcbind per machine" otherwise).
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { listExports } from '../../src/storage/nfs-client.js'
import type { Lab } from './lab.js'

export class NfsServer {
  private constructor(
    private readonly lab: Lab,
    /** The exported directory, as the server's clients name it (device_config serverpath). */
    readonly exportPath: string,
    private readonly dir: string,
  ) {}

  /** The server's address (device_config server). */
  get address(): string {
    return this.lab.storage.address
  }

  /** Starts ganesha in the lab's storage namespace and waits until it lists its export. */
  static async start(lab: Lab): Promise<NfsServer> {
    const dir = join(lab.dir, 'nfs')
    const exportPath = join(dir, 'export')
    mkdirSync(exportPath, { recursive: true })
    const server = new NfsServer(lab, exportPath, dir)
    await server.resume()
    return server
  }

  /** Starts the server again after stop() (the export's files are still there). */
  async resume(): Promise<void> {
    const { netns, address } = this.lab.storage
    writeFileSync(
      join(this.dir, 'ganesha.conf'),
      [
        `NFS_CORE_PARAM { Protocols = 3; Bind_addr = ${address}; Enable_RQUOTA = false; Enable_NLM = false; }`,
        `NFSv4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = ${this.dir}/recovery; }`,
        `EXPORT { Export_Id = 1; Path = ${this.exportPath}; Pseudo = /export; Access_Type = RW; Squash = No_Root_Squash; Protocols = 3; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }`,
        'LOG { Default_Log_Level = EVENT; }',
        '',
      ].join('\n'),
    )
    // rpcbind first (ganesha registers its programs with it at start), both in the private /run
    const script = `mount -t tmpfs tmpfs /run && { rpcbind -f -w & sleep 0.3; exec ganesha.nfsd -F -f ${this.dir}/ganesha.conf -L ${this.dir}/ganesha.log -p ${this.dir}/ganesha.pid; }`
    const child = spawn('ip', ['netns', 'exec', netns, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: 'ignore', detached: true })
    child.unref()
    const deadline = Date.now() + 20_000
    for (;;) {
      const exports: string[] = await listExports(address).catch(() => [])
      if (exports.includes(this.exportPath)) return
      if (Date.now() > deadline) throw new Error(`nfs-ganesha in ${netns} did not export ${this.exportPath} within 20 s; its log: ${readFileSync(join(this.dir, 'ganesha.log'), 'utf8').slice(-2000)}`)
      await sleep(200)
    }
  }

  /** The server's power loss: every process in the storage namespace killed. */
  async stop(): Promise<void> {
    await this.lab.killStorage()
  }

  /** The path of a file of the export as the server's own filesystem has it. */
  local(path: string): string {
    return join(this.exportPath, path)
  }
}
