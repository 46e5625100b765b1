// Messages that Xen Orchestra, XO Lite, Ansible and the SDK examples call, against a real daemon:
// VIF.configure_ipv4/ipv6, VIF.move (halted, and running: the tap changes bridge), SDN
// controllers, pool.get_license_state, the host's TLS certificate (installed and presented
// without a restart), host.disable/enable and what they do to VM placement, sched-gran, and
// VM.import from a URL served here.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { connect } from 'node:tls'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { call, Daemon, login } from '../helpers/daemon.js'
import { newGuest } from '../helpers/guest.js'

const daemon = new Daemon()
let session: string
let host: string
let pool: string
let sr: string
const c = <T = any>(method: string, ...params: unknown[]) => call<T>(daemon.url, method, session, ...params)
const rejects = (p: Promise<unknown>, code: string, params?: string[]) =>
  assert.rejects(p, (err: Error & { code?: string; params?: string[] }) => {
    assert.equal(err.code, code, err.message)
    if (params) assert.deepEqual(err.params, params)
    return true
  })
const newNetwork = (name: string) => c<string>('network.create', { name_label: name, name_description: '', MTU: 1500, other_config: {} })
const newVif = (vm: string, network: string, extra: Record<string, unknown> = {}) =>
  c<string>('VIF.create', { device: '0', network, VM: vm, MAC: '', MTU: 1500, other_config: {}, qos_algorithm_type: '', qos_algorithm_params: {}, ...extra })
const tapMaster = (vmUuid: string, device: string) => basename(readlinkSync(`/sys/class/net/t${vmUuid.replace(/-/g, '').slice(0, 10)}${device}/master`))

/** The certificate a new TLS connection to the daemon presents. */
function presented(): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: daemon.httpsPort, rejectUnauthorized: false }, () => {
      const raw = socket.getPeerCertificate().raw
      socket.end()
      resolve(new X509Certificate(raw))
    })
    socket.on('error', reject)
  })
}

describe('more messages of XO, XO Lite, Ansible and the SDKs', () => {
  before(async () => {
    await daemon.start()
    session = await login(daemon.url)
    ;[pool] = await c<string[]>('pool.get_all')
    host = await c<string>('pool.get_master', pool)
    sr = await c<string>('pool.get_default_SR', pool)
  })
  after(() => daemon.dispose())

  it('VIF.configure_ipv4/ipv6 check addresses as xapi does and need a guest agent that applies them', async () => {
    const vm = await newGuest(daemon.url, session, 'ip-config')
    const net = await newNetwork('ip-config')
    const vif = await newVif(vm.ref, net)
    await rejects(c('VIF.configure_ipv4', vif, 'Static', '10.0.0.5', ''), 'INVALID_CIDR_ADDRESS_SPECIFIED', ['address'])
    await rejects(c('VIF.configure_ipv4', vif, 'Static', '10.0.0.5/24', '10.0.0'), 'INVALID_IP_ADDRESS_SPECIFIED', ['gateway'])
    await rejects(c('VIF.configure_ipv6', vif, 'Static', 'fd00::5/129', ''), 'INVALID_CIDR_ADDRESS_SPECIFIED', ['address'])
    await rejects(c('VIF.configure_ipv4', vif, 'Static', '10.0.0.5/24', '10.0.0.1'), 'VM_LACKS_FEATURE', [vm.ref])
    await rejects(c('VIF.configure_ipv6', vif, 'None', '', ''), 'VM_LACKS_FEATURE', [vm.ref])
    await assert.rejects(c('VIF.configure_ipv4', vif, 'Dynamic', '', ''), /Dynamic/)
    const locked = await newVif(vm.ref, net, { device: '1', locking_mode: 'locked', ipv4_allowed: ['10.0.0.6'] })
    await rejects(c('VIF.configure_ipv4', locked, 'Static', '10.0.0.5/24', ''), 'ADDRESS_VIOLATES_LOCKING_CONSTRAINT', ['10.0.0.5/24'])
    const rec = await c<Record<string, unknown>>('VIF.get_record', vif)
    assert.equal(rec.ipv4_configuration_mode, 'None')
    assert.deepEqual(rec.ipv4_addresses, [])
    await c('VM.destroy', vm.ref)
  })

  it('VIF.move changes a halted VM\'s network, and a running VM\'s bridge under its NIC', async () => {
    const vm = await newGuest(daemon.url, session, 'mover')
    const a = await newNetwork('move-a')
    const b = await newNetwork('move-b')
    const vif = await newVif(vm.ref, a)
    await rejects(c('VIF.move', vif, 'OpaqueRef:nothing'), 'HANDLE_INVALID')
    await c('VIF.move', vif, b)
    assert.equal(await c('VIF.get_network', vif), b)
    assert.deepEqual(await c('network.get_VIFs', a), [])
    await c('VM.start', vm.ref, false, false)
    assert.equal(tapMaster(vm.uuid, '0'), await c('network.get_bridge', b))
    await c('VIF.move', vif, a)
    assert.equal(await c('VIF.get_network', vif), a)
    assert.equal(await c('VIF.get_currently_attached', vif), true)
    assert.equal(tapMaster(vm.uuid, '0'), await c('network.get_bridge', a))
    await c('VM.hard_shutdown', vm.ref)
    await c('VM.destroy', vm.ref)
  })

  it('SDN_controller.introduce is refused on a host of Linux bridges, as xapi refuses it without Open vSwitch', async () => {
    await rejects(c('SDN_controller.introduce', 'ssl', '192.0.2.10', 0), 'OPERATION_NOT_ALLOWED', ['host not configured for vswitch operation'])
    await assert.rejects(c('SDN_controller.introduce', 'tcp', '192.0.2.10', 0), /tcp/)
    assert.deepEqual(await c('SDN_controller.get_all'), [])
    await rejects(c('SDN_controller.forget', 'OpaqueRef:nothing'), 'HANDLE_INVALID')
  })

  it('pool.get_license_state answers XCP-ng\'s free edition that never expires', async () => {
    assert.deepEqual(await c('pool.get_license_state', pool), { edition: 'xcp-ng', expiry: 'never' })
    await rejects(c('pool.get_license_state', 'OpaqueRef:nothing'), 'HANDLE_INVALID')
  })

  it('host.get_sched_gran answers cpu and set_sched_gran is refused as xapi.conf refuses it by default', async () => {
    assert.equal(await c('host.get_sched_gran', host), 'cpu')
    await rejects(c('host.set_sched_gran', host, 'core'), 'OPERATION_NOT_ALLOWED', ['Disabled by xapi.conf'])
  })

  it('host.disable keeps new VMs off the host until host.enable', async () => {
    const ops = await c<string[]>('host.get_allowed_operations', host)
    assert.ok(ops.includes('vm_start') && ops.includes('enable') && !ops.includes('reboot') && !ops.includes('power_on'), ops.join())
    const vm = await newGuest(daemon.url, session, 'placement')
    await c('host.disable', host)
    await c('host.disable', host)
    assert.equal(await c('host.get_enabled', host), false)
    assert.ok((await c<string[]>('host.get_allowed_operations', host)).includes('reboot'))
    await rejects(c('VM.start', vm.ref, false, false), 'NO_HOSTS_AVAILABLE')
    await rejects(c('VM.start_on', vm.ref, host, false, false), 'HOST_DISABLED', [host])
    assert.equal(await c('VM.get_power_state', vm.ref), 'Halted')
    await c('host.enable', host)
    assert.equal(await c('host.get_enabled', host), true)
    assert.ok(!(await c<string[]>('host.get_allowed_operations', host)).includes('reboot'))
    assert.deepEqual(await c('host.get_current_operations', host), {})
    await c('VM.start', vm.ref, false, false)
    await c('VM.hard_shutdown', vm.ref)
    await c('VM.destroy', vm.ref)
  })

  it('host.install_server_certificate checks what it is given and the HTTPS server presents it at once', async () => {
    const before = await c<string>('host.get_server_certificate', host)
    assert.equal(new X509Certificate(before).fingerprint256, (await presented()).fingerprint256)
    assert.doesNotMatch(before, /PRIVATE KEY/)
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-cert-'))
    try {
      const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
      openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '30', '-subj', '/CN=flotilla-installed', '-keyout', 'new.key', '-out', 'new.pem')
      openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'other.key')
      const cert = readFileSync(join(dir, 'new.pem'), 'utf8')
      const key = readFileSync(join(dir, 'new.key'), 'utf8')
      await rejects(c('host.install_server_certificate', host, cert, readFileSync(join(dir, 'other.key'), 'utf8'), ''), 'SERVER_CERTIFICATE_KEY_MISMATCH')
      await rejects(c('host.install_server_certificate', host, 'no certificate', key, ''), 'SERVER_CERTIFICATE_INVALID')
      await rejects(c('host.install_server_certificate', host, cert, 'no key', ''), 'SERVER_CERTIFICATE_KEY_INVALID')
      await rejects(c('host.install_server_certificate', host, cert, key, 'no chain'), 'SERVER_CERTIFICATE_CHAIN_INVALID')
      assert.equal((await presented()).fingerprint256, new X509Certificate(before).fingerprint256, 'a refused certificate changes nothing')
      await c('host.install_server_certificate', host, cert, key, '')
      const now = await presented()
      assert.equal(now.subject, 'CN=flotilla-installed')
      assert.equal(now.fingerprint256, new X509Certificate(cert).fingerprint256)
      assert.equal(new X509Certificate(await c<string>('host.get_server_certificate', host)).fingerprint256, now.fingerprint256)
      const records = Object.values(await c<Record<string, Record<string, unknown>>>('Certificate.get_all_records'))
      assert.deepEqual(records.map((r) => [r.type, r.host, r.fingerprint]), [['host', host, now.fingerprint256]])
      assert.equal(await c('session.get_this_host', session), host, 'the API still answers')
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('VM.import fetches an XVA from a URL and imports it; failures leave nothing behind', async () => {
    const vm = await newGuest(daemon.url, session, 'to-import')
    const exported = Buffer.from(await (await fetch(`${daemon.url}/export?${new URLSearchParams({ session_id: session, ref: vm.ref })}`)).arrayBuffer())
    assert.ok(exported.length > 10_000)
    const server: Server = createServer((req, res) => {
      if (req.url === '/vm.xva') return void res.end(exported)
      if (req.url === '/garbage.xva') return void res.end(Buffer.alloc(4096, 7))
      if (req.url === '/truncated.xva') return void res.end(exported.subarray(0, Math.floor(exported.length / 2)))
      if (req.url === '/moved') return void res.writeHead(302, { location: '/vm.xva' }).end()
      res.writeHead(404).end()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`
    try {
      const counts = async () => [(await c<string[]>('VM.get_all')).length, (await c<string[]>('VDI.get_all')).length, (await c<string[]>('network.get_all')).length]
      const start = await counts()
      await rejects(c('VM.import', `${base}/missing.xva`, sr, false, false), 'IMPORT_ERROR', ['404 Not Found'])
      await rejects(c('VM.import', `${base}/moved`, sr, false, false), 'IMPORT_ERROR', ['302 Found'])
      await rejects(c('VM.import', 'ftp://127.0.0.1/vm.xva', sr, false, false), 'INTERNAL_ERROR', ['Unsupported URI scheme: ftp'])
      await rejects(c('VM.import', 'not a url', sr, false, false), 'INTERNAL_ERROR')
      await rejects(c('VM.import', `${base}/vm.xva`, 'OpaqueRef:nothing', false, false), 'HANDLE_INVALID')
      await assert.rejects(c('VM.import', `${base}/garbage.xva`, sr, false, false), /IMPORT_ERROR/)
      await assert.rejects(c('VM.import', `${base}/truncated.xva`, sr, false, false), /IMPORT_ERROR/)
      assert.deepEqual(await counts(), start, 'failed imports leave no records')
      const refs = await c<string[]>('VM.import', `${base}/vm.xva`, sr, false, false)
      assert.equal(refs.length, 1)
      const imported = await c<Record<string, any>>('VM.get_record', refs[0])
      assert.equal(imported.name_label, 'to-import')
      assert.equal(imported.power_state, 'Halted')
      assert.notEqual(imported.uuid, vm.uuid)
      assert.deepEqual(imported.current_operations, {})
      assert.equal(imported.VBDs.length, (await c<string[]>('VM.get_VBDs', vm.ref)).length)
      // The asynchronous form, as XO Lite calls it: the task's result is the set of VM refs.
      const task = await c<string>('Async.VM.import', `${base}/vm.xva`, sr, false, false)
      let status = 'pending'
      for (let i = 0; i < 300 && status === 'pending'; i++) {
        await new Promise((r) => setTimeout(r, 200))
        status = await c<string>('task.get_status', task)
      }
      assert.equal(status, 'success', JSON.stringify(await c('task.get_error_info', task)))
      assert.match(await c<string>('task.get_result', task), /OpaqueRef:/)
    } finally {
      server.close()
    }
  })
})
