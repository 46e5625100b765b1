// ZFS SRs (experimental, as XCP-ng's): a file SR in a ZFS dataset, here under zfs-fuse (this
// kernel has no modules) on a pool in a file. What a local SR does, on it: VDI create / write /
// snapshot / clone / resize / destroy with checksums, the collection merging a deleted snapshot,
// a VM whose disk is on it running; SR.destroy leaves the dataset; a location not on ZFS is refused;
// then the local SR's own tests (chain-suite) with a ZFS SR as the pool's default SR.
import assert from 'node:assert/strict'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { after, before, describe, it } from 'node:test'
import { qcow2ChainTests, type ChainSr } from '../helpers/chain-suite.js'
import { call, Daemon, jsonrpc, login, waitFor } from '../helpers/daemon.js'
import { newGuest } from '../helpers/guest.js'
import { contentHash } from '../helpers/images.js'

const run = promisify(execFile)
const MiB = 2 ** 20
const daemon = new Daemon()
const scratch = mkdtempSync(join(tmpdir(), 'flotilla-zfs-'))
const poolName = `flotilla${randomBytes(3).toString('hex')}`
const mountpoint = join(scratch, 'mnt')
let zfsFuse: ChildProcess | undefined
let url: string
let session: string
let host: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(url, method, session, ...params)


const hashOf = (path: string) => contentHash(path, scratch)

describe('a ZFS SR on zfs-fuse', () => {
  let sr: string
  const dir = join(mountpoint, 'vms')
  const image = (location: string) => join(dir, `${location}.qcow2`)

  before(async () => {
    zfsFuse = spawn('zfs-fuse', ['--no-daemon', '--pidfile', join(scratch, 'zfs-fuse.pid')], { stdio: 'ignore' })
    writeFileSync(join(scratch, 'pool.img'), '')
    truncateSync(join(scratch, 'pool.img'), 768 * MiB)
    await waitFor('zfs-fuse to answer', () => run('zpool', ['list']).then(() => true, () => undefined), 20_000)
    await run('zpool', ['create', '-m', mountpoint, poolName, join(scratch, 'pool.img')])
    await run('zfs', ['create', `${poolName}/vms`])
    await daemon.start()
    url = daemon.url
    session = await login(url)
    host = (await c<string[]>('host.get_all'))[0]!
  })
  after(async () => {
    await daemon.stop().catch(() => undefined)
    await run('zpool', ['destroy', '-f', poolName]).catch(() => undefined)
    zfsFuse?.kill('SIGTERM')
    await new Promise((r) => setTimeout(r, 500))
    rmSync(scratch, { recursive: true, force: true })
    await daemon.dispose()
  })

  it('refuses a location not on ZFS, and one missing', async () => {
    const notZfs = await jsonrpc(url, 'SR.create', [session, host, { location: scratch }, 0, 'x', '', 'zfs', 'user', false, {}])
    assert.equal(notZfs.error?.message, 'SR_BACKEND_FAILURE')
    assert.match(String(notZfs.error?.data?.[2]), /not on a mounted ZFS dataset/)
    assert.equal((await jsonrpc(url, 'SR.create', [session, host, {}, 0, 'x', '', 'zfs', 'user', false, {}])).error?.message, 'SR_BACKEND_FAILURE_94')
  })

  it('VDIs in the dataset: create, write, snapshot, clone, resize, destroy and merge, with checksums', async () => {
    sr = await c<string>('SR.create', host, { location: dir }, 0, 'ZFS', '', 'zfs', 'user', false, {})
    assert.equal(await c('SR.get_type', sr), 'zfs')
    assert.ok(Number(await c('SR.get_physical_size', sr)) > 256 * MiB)
    const vdi = await c<string>('VDI.create', { SR: sr, virtual_size: 8 * MiB, name_label: 'data', type: 'user', sharable: false, read_only: false, other_config: {} })
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 4M 512k', image(await c<string>('VDI.get_location', vdi))])
    const written = await hashOf(image(await c<string>('VDI.get_location', vdi)))
    const snapshot = await c<string>('VDI.snapshot', vdi, {})
    const clone = await c<string>('VDI.clone', snapshot, {})
    for (const v of [vdi, snapshot, clone]) assert.equal(await hashOf(image(await c<string>('VDI.get_location', v))), written)
    await c('VDI.resize', clone, 16 * MiB)
    assert.equal(Number(await c('VDI.get_virtual_size', clone)), 16 * MiB)
    await c('VDI.destroy', clone)
    await c('VDI.destroy', snapshot)
    await waitFor('the chain to be one image again', () => readdirSync(dir).filter((n) => n.endsWith('.qcow2')).length === 1 || undefined, 30_000)
    assert.equal(await hashOf(image(await c<string>('VDI.get_location', vdi))), written, 'the disk after the merge')
    await c('VDI.destroy', vdi)
    await waitFor('the last image to go', () => readdirSync(dir).filter((n) => n.endsWith('.qcow2')).length === 0 || undefined, 30_000)
  })

  it('runs a VM whose disk is on it, and SR.destroy leaves the dataset', async () => {
    const local = await newGuest(url, session, 'local guest')
    const vm = await c<string>('VM.copy', local.ref, 'ZFS guest', sr)
    const uuid = await c<string>('VM.get_uuid', vm)
    await c('VM.start', vm, false, false)
    await waitFor('the guest to tick', () => /FLOTILLA tick=2 /.test(daemon.serial(uuid)) || undefined, 180_000)
    await c('VM.hard_shutdown', vm)
    for (const vbd of await c<string[]>('VM.get_VBDs', vm)) await c('VDI.destroy', await c<string>('VBD.get_VDI', vbd))
    await c('VM.destroy', vm)
    await c('SR.destroy', sr)
    assert.ok(existsSync(dir), 'the dataset stays')
    assert.match((await run('zfs', ['list', '-H', '-o', 'name'])).stdout, new RegExp(`${poolName}/vms`))
  })

  describe('the local SR\'s tests, on a ZFS SR that is the default SR', () => {
    let where: ChainSr
    before(async () => {
      await run('zfs', ['create', `${poolName}/chains`])
      const srPath = join(mountpoint, 'chains')
      const chains = await c<string>('SR.create', host, { location: srPath }, 0, 'ZFS chains', '', 'zfs', 'user', false, {})
      const pool = (await c<string[]>('pool.get_all'))[0]
      await c('pool.set_default_SR', pool, chains)
      await c('pool.set_suspend_image_SR', pool, chains)
      where = { daemon, session, sr: chains, srPath }
    })
    qcow2ChainTests(() => where)
  })
})
