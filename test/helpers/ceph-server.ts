// A real single-node Ceph cluster for a lab's hosts: one monitor, one manager and one BlueStore
// OSD on a 4 GiB file, in the lab's storage namespace (pool-lab.md §5d: usable about 15 s after
// the start), with cephx: an admin key for the set-up and a client key limited to RBD on pool
// `rbd`, the one Flotilla gets (device_config user and key).
import { execFile, spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import type { Lab } from './lab.js'

const run = promisify(execFile)

export class CephServer {
  private constructor(
    private readonly lab: Lab,
    private readonly dir: string,
    /** The client Flotilla is given: its name (without `client.`) and its secret. */
    readonly user: string,
    readonly key: string,
    readonly pool: string,
    /** The cluster's one OSD: its id, and the pid of its process while it runs. */
    private readonly osd = { id: '0', pid: 0 },
  ) {}

  /** The monitor (device_config monitors). */
  get monitors(): string {
    return `${this.lab.storage.address}:6789`
  }

  /** A command of Ceph's (ceph, rbd) as the cluster's admin, inside the storage namespace. */
  async admin(program: 'ceph' | 'rbd', args: string[]): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', this.lab.storage.netns, program, '-c', join(this.dir, 'ceph.conf'), '-n', 'client.admin', ...args], { timeout: 60_000 })
    return stdout
  }

  /** qemu-io on an image (pool/namespace/image) through librbd, as the admin, inside the storage namespace. */
  async qemuIo(image: string, commands: string[]): Promise<void> {
    await run('ip', ['netns', 'exec', this.lab.storage.netns, 'qemu-io', '-f', 'raw', ...commands, `rbd:${image}:conf=${join(this.dir, 'ceph.conf')}:id=admin`], { timeout: 60_000 })
  }

  static async start(lab: Lab): Promise<CephServer> {
    const dir = join(lab.dir, 'ceph')
    for (const sub of ['mon', 'osd0', 'mgr', 'run']) mkdirSync(join(dir, sub), { recursive: true })
    const { netns, address } = lab.storage
    const fsid = randomUUID()
    const mon = `[v2:${address}:3300,v1:${address}:6789]`
    writeFileSync(
      join(dir, 'ceph.conf'),
      [
        '[global]',
        `fsid = ${fsid}`,
        `mon host = ${mon}`,
        'mon initial members = a',
        `public network = ${address.replace(/\.\d+$/, '.0')}/24`,
        'auth cluster required = cephx',
        'auth service required = cephx',
        'auth client required = cephx',
        'osd pool default size = 1',
        'osd pool default min size = 1',
        'mon allow pool size one = true',
        'mon allow pool delete = true',
        'mon warn on pool no redundancy = false',
        'osd crush chooseleaf type = 0',
        `run dir = ${dir}/run`,
        `admin socket = ${dir}/run/$cluster-$name.asok`,
        `log file = ${dir}/$name.log`,
        `mon data = ${dir}/mon`,
        `osd data = ${dir}/osd$id`,
        `mgr data = ${dir}/mgr`,
        'osd objectstore = bluestore',
        'bluestore block create = true',
        'bluestore block size = 4294967296',
        'bluestore block db create = false',
        'bluestore block wal create = false',
        'osd memory target = 1073741824',
        '[mon]',
        'keyring = $mon_data/keyring',
        '[osd]',
        'keyring = $osd_data/keyring',
        '[mgr]',
        'keyring = $mgr_data/keyring',
        '[client.admin]',
        `keyring = ${dir}/client.admin.keyring`,
        '',
      ].join('\n'),
    )
    const conf = ['-c', join(dir, 'ceph.conf')]
    const inNs = (program: string, args: string[]) => run('ip', ['netns', 'exec', netns, program, ...args], { timeout: 120_000 })
    const daemon = (program: string, args: string[]) => cephDaemon(netns, conf, program, args)
    await run('ceph-authtool', ['--create-keyring', join(dir, 'mon.keyring'), '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *'])
    await run('ceph-authtool', ['--create-keyring', join(dir, 'client.admin.keyring'), '--gen-key', '-n', 'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow *', '--cap', 'mds', 'allow *'])
    await run('ceph-authtool', [join(dir, 'mon.keyring'), '--import-keyring', join(dir, 'client.admin.keyring')])
    await run('monmaptool', ['--create', '--addv', 'a', mon, '--fsid', fsid, join(dir, 'monmap')])
    await inNs('ceph-mon', [...conf, '-i', 'a', '--mkfs', '--monmap', join(dir, 'monmap'), '--keyring', join(dir, 'mon.keyring')])
    daemon('ceph-mon', ['-i', 'a'])
    const server = new CephServer(lab, dir, 'flotilla', '', 'rbd')
    await waitUntil('the monitor to answer', () => server.admin('ceph', ['mon', 'stat']))
    await server.admin('ceph', ['auth', 'get-or-create', 'mgr.x', 'mon', 'allow profile mgr', 'osd', 'allow *', 'mds', 'allow *', '-o', join(dir, 'mgr', 'keyring')])
    daemon('ceph-mgr', ['-i', 'x'])
    const osdUuid = randomUUID()
    const id = (await server.admin('ceph', ['osd', 'new', osdUuid])).trim()
    const osdKeyring = join(dir, `osd${id}`, 'keyring')
    mkdirSync(join(dir, `osd${id}`), { recursive: true })
    await run('ceph-authtool', ['--create-keyring', osdKeyring, '--gen-key', '-n', `osd.${id}`])
    await server.admin('ceph', ['auth', 'add', `osd.${id}`, 'osd', 'allow *', 'mon', 'allow profile osd', 'mgr', 'allow profile osd', '-i', osdKeyring])
    await inNs('ceph-osd', [...conf, '-i', id, '--mkfs', '--osd-uuid', osdUuid])
    const osd = daemon('ceph-osd', ['-i', id])
    await waitUntil('the OSD to be up', async () => {
      if (!/1 up/.test(await server.admin('ceph', ['osd', 'stat']))) throw new Error('not up yet')
    })
    await server.admin('ceph', ['osd', 'pool', 'create', 'rbd', '8'])
    await server.admin('ceph', ['osd', 'pool', 'set', 'rbd', 'size', '1', '--yes-i-really-mean-it'])
    await server.admin('rbd', ['pool', 'init', 'rbd'])
    // RBD clone format 2 (snapshots with clones can be deleted) wants clients from Mimic on
    await server.admin('ceph', ['osd', 'set-require-min-compat-client', 'mimic'])
    await server.admin('ceph', ['auth', 'get-or-create', 'client.flotilla', 'mon', 'profile rbd', 'osd', 'profile rbd pool=rbd', 'mgr', 'profile rbd pool=rbd'])
    const key = (await server.admin('ceph', ['auth', 'get-key', 'client.flotilla'])).trim()
    return new CephServer(lab, dir, 'flotilla', key, 'rbd', { id, pid: osd })
  }

  /** The OSD's power loss: its process killed, so that no I/O of any client completes. */
  stopOsd(): void {
    process.kill(this.osd.pid, 'SIGKILL')
  }

  /** The OSD started again on its store, up once the monitor says so. */
  async resumeOsd(): Promise<void> {
    this.osd.pid = cephDaemon(this.lab.storage.netns, ['-c', join(this.dir, 'ceph.conf')], 'ceph-osd', ['-i', this.osd.id])
    await waitUntil('the OSD to be up again', async () => {
      if (!/1 up/.test(await this.admin('ceph', ['osd', 'stat']))) throw new Error('not up yet')
    })
  }

  /** The cluster's last log lines, for a failure. */
  log(name = 'osd.0'): string {
    try {
      return readFileSync(join(this.dir, `${name}.log`), 'utf8').slice(-3000)
    } catch {
      return ''
    }
  }
}

/** A Ceph daemon in the foreground of its own process in `netns` (ip netns exec execs it: the pid is the daemon's). */
function cephDaemon(netns: string, conf: string[], program: string, args: string[]): number {
  const child = spawn('ip', ['netns', 'exec', netns, program, ...conf, ...args, '-f'], { stdio: 'ignore', detached: true })
  child.unref()
  return child.pid!
}

async function waitUntil(what: string, fn: () => Promise<unknown>, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      await fn()
      return
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`waiting for ${what}: ${(err as Error).message}`)
      await sleep(500)
    }
  }
}
