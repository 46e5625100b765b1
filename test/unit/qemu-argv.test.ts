// Golden command lines for typical VM shapes, and the configs the builder must refuse.
// UPDATE_GOLDEN=1 rewrites the golden files (test/golden/qemu/<shape>.argv, one argument per line).
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { qemuArgv } from '../../src/qemu/argv.js'
import type { QemuVmConfig } from '../../src/qemu/config.js'
import { imageLockedError } from '../../src/qemu/errors.js'
import { qemuShapes } from '../helpers/qemu-shapes.js'

// Compiled to dist/test/unit/: the golden files stay in the source tree.
const GOLDEN_DIR = fileURLToPath(new URL('../../../test/golden/qemu/', import.meta.url))
const shapes = qemuShapes({ runRoot: '/run/flotilla/vm', dataRoot: '/var/lib/flotilla/sr/local', taps: ['vif1.0', 'vif1.1'] })

describe('qemuArgv golden command lines', () => {
  for (const [name, config] of Object.entries(shapes)) {
    it(name, async () => {
      const actual = qemuArgv(config).join('\n') + '\n'
      const file = `${GOLDEN_DIR}${name}.argv`
      if (process.env.UPDATE_GOLDEN === '1') {
        await mkdir(GOLDEN_DIR, { recursive: true })
        await writeFile(file, actual)
      }
      assert.equal(actual, await readFile(file, 'utf8'), `argv of ${name} differs from ${file} (UPDATE_GOLDEN=1 rewrites it)`)
    })
  }

  it('orders disks by userdevice and escapes commas in option values', () => {
    const argv = qemuArgv(shapes['bios-virtio-linux']!)
    const devices = argv.filter((_, i) => argv[i - 1] === '-device' && /drive=|ide-cd/.test(argv[i]!))
    assert.deepEqual(devices.map((d) => /id=([^,]+)/.exec(d)![1]), ['d0-dev', 'd1-dev', 'cd0-dev'])
    assert.ok(argv.includes('driver=file,filename=/var/lib/flotilla/sr/local/install,, v1.iso,node-name=cd0f,read-only=on,cache.direct=off,aio=threads'))
    assert.ok(argv.includes('type=11,value=qlab.note=a,,b'))
  })

  it('opens an image on an NFS or RBD SR through QEMU\'s own clients, with no file I/O options', () => {
    const config = structuredClone(shapes['bios-virtio-linux']!)
    const disk = config.disks.find((d) => d.node === 'd0')!
    disk.path = 'nfs://10.0.0.5/exports/sr/3f1c2a9e-0000-4000-8000-000000000001/b5a0c1d2-0000-4000-8000-000000000002.qcow2'
    const argv = qemuArgv(config)
    assert.ok(argv.includes('driver=nfs,server.type=inet,server.host=10.0.0.5,path=/exports/sr/3f1c2a9e-0000-4000-8000-000000000001/b5a0c1d2-0000-4000-8000-000000000002.qcow2,node-name=d0f,read-only=off,discard=unmap'))
    disk.path = 'rbd:rbd/3f1c2a9e-0000-4000-8000-000000000001/b5a0c1d2-0000-4000-8000-000000000002:conf=/tmp/flotilla-ceph/ab/ceph.conf:id=flotilla'
    assert.ok(qemuArgv(config).includes('driver=rbd,pool=rbd,namespace=3f1c2a9e-0000-4000-8000-000000000001,image=b5a0c1d2-0000-4000-8000-000000000002,conf=/tmp/flotilla-ceph/ab/ceph.conf,user=flotilla,node-name=d0f,read-only=off,discard=unmap'))
    disk.path = 'iscsi://10.0.0.5/iqn/1'
    assert.throws(() => qemuArgv(config), /absolute path, an nfs:\/\/ URL or an RBD image/)
  })

  it('is pure: the same config gives the same argv', () => {
    const config = shapes['uefi-secureboot']!
    assert.deepEqual(qemuArgv(structuredClone(config)), qemuArgv(config))
  })
})

describe('qemuArgv refuses impossible configs', () => {
  const ok = shapes['bios-virtio-linux']!
  const refuses = (change: (c: QemuVmConfig) => void, message: RegExp): void => {
    const config = structuredClone(ok)
    change(config)
    assert.throws(() => qemuArgv(config), message)
  }
  const disk = (c: QemuVmConfig, node: string) => c.disks.find((d) => d.node === node)!

  it('firmware and machine combinations', () => {
    refuses((c) => { c.secureBoot = true }, /secureBoot needs firmware uefi/)
    refuses((c) => { c.firmware = 'uefi' }, /needs ovmfCode and nvram/)
    refuses((c) => Object.assign(c, { firmware: 'uefi', secureBoot: true, machine: 'pc', hotplugPorts: 0, ovmfCode: '/a', nvram: '/b' }), /secureBoot needs machine q35/)
    refuses((c) => { c.machine = 'pc' }, /hot-plug root ports need machine q35/)
    refuses((c) => Object.assign(c, { machine: 'pc', hotplugPorts: 0 }), /bus ahci needs machine q35/)
    refuses((c) => { disk(c, 'd1').bus = 'nvme'; c.machine = 'pc'; c.hotplugPorts = 0; c.disks = c.disks.filter((d) => d.bus !== 'ahci') }, /bus nvme needs machine q35/)
    refuses((c) => { disk(c, 'cd0').bus = 'ide' }, /bus ide needs machine pc/)
  })

  it('disk and NIC shapes', () => {
    refuses((c) => { delete disk(c, 'd1').path }, /only a CD drive may be empty/)
    refuses((c) => { disk(c, 'cd0').bus = 'virtio' }, /CD drive needs bus ide or ahci/)
    refuses((c) => { disk(c, 'd1').bus = 'ahci'; disk(c, 'd1').readOnly = true }, /cannot be read-only/)
    refuses((c) => { disk(c, 'd1').path = 'relative.qcow2' }, /absolute path/)
    refuses((c) => { disk(c, 'd1').node = '1bad' }, /node name must start with a letter/)
    refuses((c) => { c.nics[0]!.mac = '0e:11:22:33:44' }, /not a MAC address/)
    refuses((c) => { c.nics[0]!.tap = 'a-very-long-tap-name' }, /not a valid interface name/)
    refuses((c) => { c.nics[0]!.hotplugPort = 2 }, /hotplugPort 2 does not exist/)
    refuses((c) => { c.disks = Array.from({ length: 7 }, (_, i) => ({ ...disk(c, 'cd0'), node: `cd${i}`, userdevice: i })) }, /7 AHCI devices/)
    refuses((c) => { c.maxVcpus = 1 }, /maxVcpus must be an integer between vcpus \(2\)/)
    refuses((c) => { c.uuid = 'not-a-uuid' }, /is not a UUID/)
  })

  it('duplicates', () => {
    refuses((c) => { disk(c, 'd1').userdevice = 0 }, /duplicate userdevice 0/)
    refuses((c) => { disk(c, 'd1').node = 'd0' }, /duplicate block node name d0/)
    refuses((c) => { disk(c, 'd1').node = 'fwcode' }, /duplicate block node name fwcode/)
    refuses((c) => { c.nics[1]!.id = 'hp0' }, /duplicate device id hp0/)
    refuses((c) => { c.nics[1]!.bootIndex = 1 }, /duplicate bootIndex 1/)
    refuses((c) => { c.nics[1]!.mac = c.nics[0]!.mac.toUpperCase() }, /duplicate MAC/)
    refuses((c) => { c.nics[1]!.tap = c.nics[0]!.tap }, /duplicate tap/)
  })

  it('unix socket paths over 107 bytes', () => {
    refuses((c) => { c.runDir = `/run/${'x'.repeat(91)}` }, /socket path .*serial\.sock is 108 bytes, over the 107-byte/)
    assert.doesNotThrow(() => qemuArgv({ ...ok, runDir: `/run/${'x'.repeat(90)}` }))
  })
})

describe('QEMU lock errors', () => {
  it('name the locked image', () => {
    const output = 'qemu-system-x86_64: -blockdev driver=qcow2,node-name=d0,file=d0f: Failed to get "write" lock\nIs another process using the image [/srv/a.qcow2]?\n'
    const err = imageLockedError(output)
    assert.equal(err?.imagePath, '/srv/a.qcow2')
    assert.match(err!.message, /disk image \/srv\/a\.qcow2 is in use by another process/)
    assert.equal(imageLockedError('qemu-img: Could not open x: No such file'), undefined)
  })
})
