// Where an SR is from its PBD's device_config (src/xapi/sr-config.ts), what an NFS location
// splits into (src/storage/sr-files.ts), and the XML an NFS probe answers with.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseNfsLocation } from '../../src/storage/sr-files.js'
import { srWhere } from '../../src/xapi/sr-config.js'
import { probeAnswer } from '../../src/xapi/storage.js'

const SR = '3f1c2a9e-0000-4000-8000-000000000001'
const code = (fn: () => unknown) => {
  try {
    fn()
  } catch (err) {
    return (err as { code: string }).code
  }
  return 'no error'
}

describe('an SR\'s place from its device_config', () => {
  it('an NFS SR is serverpath/<SR uuid> on the server, however the serverpath is written', () => {
    assert.equal(srWhere('nfs', { server: '10.0.0.5', serverpath: '/exports/vms' }, SR), `nfs://10.0.0.5/exports/vms/${SR}`)
    assert.equal(srWhere('nfs', { server: 'nas.example', serverpath: '/exports//vms/' }, SR), `nfs://nas.example/exports/vms/${SR}`)
    assert.equal(srWhere('nfs', { server: '10.0.0.5', serverpath: '/' }, SR), `nfs://10.0.0.5/${SR}`)
    assert.equal(srWhere('nfs', { server: '10.0.0.5', serverpath: '/x', nfsversion: '3' }, SR), `nfs://10.0.0.5/x/${SR}`)
  })

  it('refuses what xapi\'s NFS driver refuses, with its SM error numbers', () => {
    assert.equal(code(() => srWhere('nfs', { serverpath: '/x' }, SR)), 'SR_BACKEND_FAILURE_102')
    assert.equal(code(() => srWhere('nfs', { server: 'a b', serverpath: '/x' }, SR)), 'SR_BACKEND_FAILURE_102')
    assert.equal(code(() => srWhere('nfs', { server: '10.0.0.5' }, SR)), 'SR_BACKEND_FAILURE_101')
    assert.equal(code(() => srWhere('nfs', { server: '10.0.0.5', serverpath: 'relative' }, SR)), 'SR_BACKEND_FAILURE_103')
    assert.equal(code(() => srWhere('nfs', { server: '10.0.0.5', serverpath: '/x/../etc' }, SR)), 'SR_BACKEND_FAILURE_103')
    assert.equal(code(() => srWhere('nfs', { server: '10.0.0.5', serverpath: '/x', nfsversion: '4.1' }, SR)), 'SR_BACKEND_FAILURE_72')
  })

  it('a local SR is its device_config path', () => {
    assert.equal(srWhere('ext', { path: '/var/lib/flotilla/sr/a' }, SR), '/var/lib/flotilla/sr/a')
    assert.equal(code(() => srWhere('ext', {}, SR)), 'SR_BACKEND_FAILURE')
  })

  it('an NFS location splits into the export and the SR directory on it', () => {
    assert.deepEqual(parseNfsLocation(`nfs://10.0.0.5/exports/vms/${SR}`), { server: '10.0.0.5', exportPath: '/exports/vms', dir: SR })
    assert.throws(() => parseNfsLocation('nfs://10.0.0.5/onlyone'), { code: 'SR_BACKEND_FAILURE' })
    assert.throws(() => parseNfsLocation('nfs://10.0.0.5/a/../b'), { code: 'SR_BACKEND_FAILURE' })
  })
})

it('an NFS probe lists the exports as xapi\'s driver does, escaped, in its SR_BACKEND_FAILURE_101', () => {
  let xml = ''
  assert.throws(() => probeAnswer({ server: '10.0.0.5' }, { exports: ['/exports/vms', '/a&b'] }), (err: { code: string; params: string[] }) => {
    xml = err.params[2]!
    return err.code === 'SR_BACKEND_FAILURE_101' && /missing the serverpath/.test(err.params[1]!)
  })
  assert.match(xml, /^<\?xml version="1\.0" \?>\n<nfs-exports>\n\t<Export>\n\t\t<Target>10\.0\.0\.5<\/Target>\n\t\t<Path>\/exports\/vms<\/Path>\n\t\t<Accesslist>\*<\/Accesslist>\n\t<\/Export>\n/)
  assert.match(xml, /<Path>\/a&amp;b<\/Path>/)
})
