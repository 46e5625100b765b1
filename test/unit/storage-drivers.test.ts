// The SR drivers behind one interface: the registry by SR type, what each declares (the SM
// records clients see), and the ISO library's file handling, on a scratch directory.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { StorageError } from '../../src/storage/driver.js'
import { driverInfos, getDriver } from '../../src/storage/registry.js'
import { filesystemOf } from '../../src/storage/zfs-sr.js'

const FILE_SR = ['SR_PROBE', 'SR_UPDATE', 'VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'VDI_UPDATE', 'VDI_CLONE', 'VDI_SNAPSHOT', 'VDI_RESIZE', 'THIN_PROVISIONING']

describe('the SR driver registry', () => {
  it('has a driver for each SR type Flotilla supports, declaring the SM records clients saw before drivers existed', () => {
    assert.deepEqual(driverInfos(), [
      { type: 'ext', name: 'Local EXT4 VHD', capabilities: FILE_SR },
      { type: 'xfs', name: 'Local XFS', capabilities: FILE_SR },
      { type: 'iso', name: 'ISO', capabilities: ['VDI_CREATE', 'VDI_DELETE', 'VDI_ATTACH', 'VDI_DETACH', 'SR_SCAN'] },
      { type: 'nfs', name: 'NFS VHD', capabilities: FILE_SR },
      { type: 'rbd', name: 'Ceph RBD', capabilities: FILE_SR },
      { type: 'zfs', name: 'ZFS', capabilities: FILE_SR },
    ])
    for (const { type } of driverInfos()) assert.equal(getDriver(type).info().type, type)
  })

  it('refuses an unknown SR type with xapi\'s SR_UNKNOWN_DRIVER', () => {
    assert.throws(
      () => getDriver('nfs-via-kernel'),
      (err: unknown) => err instanceof StorageError && err.code === 'SR_UNKNOWN_DRIVER' && err.params[0] === 'nfs-via-kernel',
    )
  })

  it('names a file SR\'s images after their location and format, and nothing outside the SR', () => {
    const sr = { type: 'ext', path: '/srv/sr' }
    const uuid = '0b6f2c55-1b7a-4e0e-9c3b-5d6f7a8b9c0d'
    assert.equal(getDriver('ext').vdiPath(sr, uuid), `/srv/sr/${uuid}.qcow2`)
    assert.equal(getDriver('xfs').vdiPath({ ...sr, type: 'xfs' }, uuid, 'raw'), `/srv/sr/${uuid}.raw`)
    assert.equal(getDriver('nfs').vdiPath({ type: 'nfs', path: 'nfs://10.0.0.5/exports/sr1' }, uuid), `nfs://10.0.0.5/exports/sr1/${uuid}.qcow2`)
    assert.throws(() => getDriver('ext').vdiPath(sr, '../etc/passwd'), { code: 'VDI_MISSING' })
  })
})

describe('the ISO library driver', () => {
  it('makes files named after the name_label when that is an ISO name, lists only *.iso files, and has no image operations', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'flotilla-iso-'))
    try {
      const iso = getDriver('iso')
      const sr = { type: 'iso', path: dir }
      await iso.attach(sr)
      assert.deepEqual(await iso.createVdi(sr, 4096, 'tools.iso'), { location: 'tools.iso', virtualSize: 4096, physicalUtilisation: 0 })
      const unnamed = await iso.createVdi(sr, 512, 'my disk')
      assert.match(unnamed.location, /^[0-9a-f-]{36}\.iso$/)
      await writeFile(join(dir, 'notes.txt'), 'not an image')
      assert.deepEqual((await iso.scan(sr)).map((i) => i.location).sort(), [unnamed.location, 'tools.iso'].sort())
      await assert.rejects(iso.createVdi(sr, 1, 'tools.iso'), { code: 'EEXIST' })
      assert.equal(iso.vdiPath(sr, 'tools.iso'), join(dir, 'tools.iso'))
      assert.throws(() => iso.vdiPath(sr, '../tools.iso'), { code: 'VDI_MISSING' })
      for (const op of [iso.snapshot(sr, 'tools.iso', 'next'), iso.clone(sr, 'tools.iso', 'next'), iso.resize(sr, 'tools.iso', 1), iso.vdiImage(sr, 'tools.iso')])
        await assert.rejects(op, { code: 'VDI_MISSING', params: [dir, 'tools.iso'] })
      assert.deepEqual(await iso.gc(sr, new Set(), new Set(), async () => false), { done: [], deferred: false })
      await iso.destroyVdi(sr, 'tools.iso')
      assert.deepEqual((await iso.scan(sr)).map((i) => i.location), [unnamed.location])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('the ZFS driver', () => {
  it('finds the filesystem a path is on from the mounts, by the longest mountpoint', () => {
    const mounts = ['/dev/sda1 / ext4 rw 0 0', 'tank /tank fuse.zfs rw 0 0', 'tank/vms /tank/vms zfs rw 0 0', 'tmpfs /tank/vms/tmp tmpfs rw 0 0', ''].join('\n')
    assert.equal(filesystemOf(mounts, '/tank/vms/sr1'), 'zfs')
    assert.equal(filesystemOf(mounts, '/tank/other'), 'fuse.zfs')
    assert.equal(filesystemOf(mounts, '/tank/vms/tmp/x'), 'tmpfs')
    assert.equal(filesystemOf(mounts, '/tankette'), 'ext4', 'a mountpoint is a whole path component')
  })
})
