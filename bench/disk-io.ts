// bench/disk-io: the disk speed a guest sees on the local, NFS and Ceph RBD SRs of one lab host
// (NFS on nfs-ganesha and a single-node Ceph cluster in the lab's storage namespace), against the
// same workload run by `qemu-img bench` from the host on an image of the same SR made the same
// way, with the host cache mode the VMs get (page cache, thread pool: src/qemu/protocol.ts).
// The guest's workload is the test guest's flotilla:diskbench switch (diskbench.c): N MiB
// written and read back in 1 MiB requests, then 4 KiB random reads, all O_DIRECT at queue
// depth 1; qemu-img bench makes the same requests (its random reads: a stride that wraps).
// Then, for the choice of the VMs' host cache mode, qemu-img bench on the local SR's kind of
// image with O_DIRECT (native AIO and io_uring) against the page cache.
// Prints each figure, the guest / direct ratio (aim ≥ 0.8 for sequential on KVM) and each
// network SR / local ratio. FLOTILLA_DISKBENCH_MIB sets N (default 256).
import { call, waitFor } from '../test/helpers/daemon.js'
import { agentCall } from '../test/helpers/agent.js'
import { CephServer } from '../test/helpers/ceph-server.js'
import { newGuest } from '../test/helpers/guest.js'
import { Lab } from '../test/helpers/lab.js'
import { NfsServer } from '../test/helpers/nfs-server.js'

const MiB = 2 ** 20
const SIZE = Number(process.env.FLOTILLA_DISKBENCH_MIB ?? 256)
const RANDOM_READS = 4000
/** qemu-img bench's "random" reads: a stride of 7919 blocks (a prime), wrapping at the image's end. */
const STRIDE = 7919 * 4096
const REREADS = 4

interface Figures { seqWrite: number; seqRead: number; randRead: number }

const lab = await Lab.up(1)
try {
  const nfs = await NfsServer.start(lab)
  const ceph = await CephServer.start(lab)
  const url = lab.host(1).url
  const session = await call<string>(url, 'session.login_with_password', 'root', lab.password)
  const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)
  const host = (await c<string[]>('host.get_all'))[0]!
  const accel = String((await c<Record<string, string>>('host.get_software_version', host)).xen)
  const rbdConfig = { monitors: ceph.monitors, pool: ceph.pool, user: ceph.user, key: ceph.key }
  const srs: [string, string][] = [
    ['local', await c<string>('pool.get_default_SR', (await c<string[]>('pool.get_all'))[0])],
    ['nfs', await c<string>('SR.create', host, { server: nfs.address, serverpath: nfs.exportPath }, 0, 'NFS', '', 'nfs', 'user', true, {})],
    ['rbd', await c<string>('SR.create', host, rbdConfig, 0, 'RBD', '', 'rbd', 'user', true, {})],
  ]

  /** Where the host's QEMU opens a VDI: the agent's own answer for the SR as plugged. */
  const imageOf = async (sr: string, vdi: string): Promise<{ path: string; format: string }> => {
    const type = await c<string>('SR.get_type', sr)
    const config = await c<Record<string, string>>('PBD.get_device_config', (await c<string[]>('SR.get_PBDs', sr))[0])
    const uuid = await c<string>('SR.get_uuid', sr)
    const where = type === 'nfs' ? `nfs://${config.server}${config.serverpath}/${uuid}` : type === 'rbd' ? `rbd://${config.monitors}/${config.pool}/${uuid}` : config.path!
    const location = await c<string>('VDI.get_location', vdi)
    return { path: await agentCall<string>(lab.host(1).daemon, 'vdi.path', { type, path: where, config, location }), format: type === 'rbd' ? 'raw' : 'qcow2' }
  }
  const newVdi = (sr: string, name: string) => c<string>('VDI.create', { SR: sr, virtual_size: SIZE * MiB, name_label: name, type: 'user', sharable: false, read_only: false, other_config: {} })

  /** Seconds qemu-img bench takes, run in the host's namespace as its QEMU would open the image. */
  const qemuImgBench = (image: { path: string; format: string }, args: string[], cache = ['-t', 'writeback', '-i', 'threads']): number => {
    const out = lab.exec(1, 'qemu-img', ['bench', ...cache, '-d', '1', '-f', image.format, ...args, image.path])
    const m = /Run completed in ([\d.]+) seconds/.exec(out)
    if (!m) throw new Error(`qemu-img bench said: ${out}`)
    return Number(m[1])
  }
  const direct = (image: { path: string; format: string }, cache?: string[]): Figures => ({
    seqWrite: SIZE / qemuImgBench(image, ['-w', '-c', String(SIZE), '-s', '1M', `--flush-interval=${SIZE}`], cache),
    // Reads from the host's page cache take milliseconds, which qemu-img bench gives to 1 ms: the reads go over the image several times.
    seqRead: (REREADS * SIZE) / qemuImgBench(image, ['-c', String(REREADS * SIZE), '-s', '1M'], cache),
    randRead: (REREADS * RANDOM_READS) / qemuImgBench(image, ['-c', String(REREADS * RANDOM_READS), '-s', '4k', '-S', String(STRIDE)], cache),
  })

  const inGuest = async (name: string, sr: string): Promise<Figures> => {
    const data = await newVdi(sr, `diskbench ${name}`)
    const vm = await newGuest(url, session, `diskbench ${name}`, { data, oem: [`flotilla:diskbench=${SIZE}`] })
    await c('VM.start', vm.ref, false, false)
    try {
      const line = await waitFor(`the guest's figures on ${name}`, () => /FLOTILLA diskbench (.*)/.exec(lab.host(1).daemon.serial(vm.uuid))?.[1], 600_000)
      const m = /seq-write=([\d.]+) seq-read=([\d.]+) rand-read-4k=([\d.]+)/.exec(line)
      if (!m) throw new Error(`the guest's diskbench: ${line}`)
      return { seqWrite: Number(m[1]), seqRead: Number(m[2]), randRead: Number(m[3]) }
    } finally {
      await c('VM.hard_shutdown', vm.ref)
    }
  }

  const row = (label: string, f: Figures) =>
    console.log(`${label.padEnd(34)} seq-write ${f.seqWrite.toFixed(1).padStart(7)} MiB/s  seq-read ${f.seqRead.toFixed(1).padStart(7)} MiB/s  4k-random-read ${f.randRead.toFixed(0).padStart(6)} IOPS`)
  const ratio = (label: string, a: Figures, b: Figures) =>
    console.log(`${label.padEnd(34)} seq-write ${(a.seqWrite / b.seqWrite).toFixed(2).padStart(7)}        seq-read ${(a.seqRead / b.seqRead).toFixed(2).padStart(7)}        4k-random-read ${(a.randRead / b.randRead).toFixed(2).padStart(6)}`)

  console.log(`disk-io: ${SIZE} MiB sequential, ${RANDOM_READS} random 4 KiB reads, queue depth 1, on ${accel}`)
  const results = new Map<string, { guest: Figures; direct: Figures }>()
  for (const [name, sr] of srs) {
    const guest = await inGuest(name, sr)
    const straight = direct(await imageOf(sr, await newVdi(sr, `qemu-img bench ${name}`)))
    results.set(name, { guest, direct: straight })
    row(`${name}: in the guest`, guest)
    row(`${name}: qemu-img bench`, straight)
    ratio(`${name}: guest / direct`, guest, straight)
  }
  const local = results.get('local')!
  for (const name of ['nfs', 'rbd']) {
    ratio(`${name} / local, in the guest`, results.get(name)!.guest, local.guest)
    ratio(`${name} / local, qemu-img bench`, results.get(name)!.direct, local.direct)
  }
  // The host cache mode: O_DIRECT against the page cache the VMs use, on fresh local images.
  const localSr = srs[0]![1]
  const pageCache = direct(await imageOf(localSr, await newVdi(localSr, 'page cache')))
  row('local, page cache + threads', pageCache)
  for (const aio of ['native', 'io_uring']) {
    try {
      const odirect = direct(await imageOf(localSr, await newVdi(localSr, `O_DIRECT ${aio}`)), ['-t', 'none', '-i', aio])
      row(`local, O_DIRECT + ${aio}`, odirect)
      ratio(`O_DIRECT + ${aio} / page cache`, odirect, pageCache)
    } catch (err) {
      console.log(`local, O_DIRECT + ${aio}: not possible here (${(err as Error).message.split('\n')[0]})`)
    }
  }
} finally {
  lab.down()
}
