// An SR forgotten and introduced back (SR.forget, SR.introduce, PBD.create, PBD.plug, SR.scan) on
// a simulated host, with a real file SR: its disks are found again, and no collection deletes
// them meanwhile, though until the scan no VDI record names their images; after it, the SR is
// collected as any other.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, it } from 'node:test'
import { collectSrGarbage } from '../../src/xapi/storage.js'
import { startSimHost, type SimHost } from '../helpers/sim-host.js'

let host: SimHost
before(async () => (host = await startSimHost()))
after(() => host.dispose())

it('keeps the disks of an introduced SR until its scan records them, then finds them', async () => {
  const dir = join(host.dataDir, 'sr-again')
  const sr = await host.c<string>('SR.create', host.svc.hostRef, { path: dir }, 0, 'again', '', 'ext', 'user', false, {})
  const uuid = await host.c<string>('SR.get_uuid', sr)
  const vdi = await host.c<string>('VDI.create', { SR: sr, virtual_size: 2 ** 20, name_label: 'kept', type: 'user', sharable: false, read_only: false, other_config: {} })
  const location = await host.c<string>('VDI.get_location', vdi)
  for (const pbd of await host.c<string[]>('SR.get_PBDs', sr)) await host.c('PBD.unplug', pbd)
  await host.c('SR.forget', sr)

  const again = await host.c<string>('SR.introduce', uuid, 'again', '', 'ext', 'user', false, {})
  await host.c('PBD.plug', await host.c<string>('PBD.create', { host: host.svc.hostRef, SR: again, device_config: { path: dir }, other_config: {} }))
  await collectSrGarbage(host.svc, again)
  assert.ok(existsSync(join(dir, `${location}.qcow2`)), 'a collection before the scan deletes nothing')
  await host.c('SR.scan', again)
  const found = await Promise.all((await host.c<string[]>('SR.get_VDIs', again)).map((v) => host.c<string>('VDI.get_location', v)))
  assert.deepEqual(found, [location])
  await collectSrGarbage(host.svc, again)
  assert.ok(existsSync(join(dir, `${location}.qcow2`)))
  // scanned, the SR is collected again: the image of its last VDI goes with the VDI
  await host.c('VDI.destroy', (await host.c<string[]>('SR.get_VDIs', again))[0])
  await collectSrGarbage(host.svc, again)
  assert.ok(!existsSync(join(dir, `${location}.qcow2`)))
})

it('a collection of an SR that went meanwhile (destroyed while it waited) ends quietly', async () => {
  await collectSrGarbage(host.svc, 'OpaqueRef:7a0f1b2c-0000-4000-8000-00000000dead')
})
