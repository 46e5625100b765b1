// The pure parts of VIF.configure_ipv4/ipv6, SDN_controller.introduce, pool.get_license_state,
// host.allowed_operations and host.install_server_certificate's checks, as xapi makes them.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { XapiError } from '../../src/idl/errors.js'
import { buildRecord } from '../../src/idl/index.js'
import { configureIpError, parseCidr } from '../../src/xapi/vif.js'
import { sdnControllerFields } from '../../src/xapi/sdn.js'
import { licenseState } from '../../src/xapi/pool.js'
import { allowedHostOperations, hostOperationErrors } from '../../src/xapi/host-ops.js'
import { rfc3339, signatureAlgorithm, validateServerCertificate } from '../../src/xapi/certificates.js'

const refused = (code: string, params?: string[]) => (err: unknown) => {
  assert.ok(err instanceof XapiError, String(err))
  assert.equal(err.code, code)
  if (params) assert.deepEqual(err.params, params)
  return true
}
const fails = (fn: () => unknown, code: string, params?: string[]) => assert.throws(fn, refused(code, params))

describe('VIF.configure_ipv4/ipv6 checks', () => {
  const vif = { VM: 'OpaqueRef:vm', locking_mode: 'network_default', ipv4_allowed: [], ipv6_allowed: [] }
  const net = { default_locking_mode: 'unlocked' }
  const tools = { 'feature-static-ip-setting': '1' }
  it('parses CIDRs of each family', () => {
    assert.deepEqual(parseCidr('ipv4', '10.0.0.5/24'), { address: '10.0.0.5', prefix: 24 })
    assert.equal(parseCidr('ipv4', '10.0.0.5'), undefined)
    assert.equal(parseCidr('ipv4', '10.0.0.5/33'), undefined)
    assert.equal(parseCidr('ipv4', 'fd00::1/64'), undefined)
    assert.deepEqual(parseCidr('ipv6', 'FD00:0:0::1/64'), { address: 'fd00::1', prefix: 64 })
    assert.equal(parseCidr('ipv6', 'fd00::1/129'), undefined)
  })
  it('refuses in xapi order: CIDR, locking, gateway, then the guest feature', () => {
    assert.equal(configureIpError('ipv4', vif, net, tools, 'Static', '10.0.0.5/24', '10.0.0.1'), undefined)
    assert.equal(configureIpError('ipv4', vif, net, tools, 'None', '', ''), undefined)
    const e = (...a: Parameters<typeof configureIpError>) => configureIpError(...a)?.description
    assert.deepEqual(e('ipv4', vif, net, undefined, 'Static', '10.0.0.5', 'bad'), ['INVALID_CIDR_ADDRESS_SPECIFIED', 'address'])
    assert.deepEqual(e('ipv4', vif, net, undefined, 'Static', '10.0.0.5/24', 'bad'), ['INVALID_IP_ADDRESS_SPECIFIED', 'gateway'])
    assert.deepEqual(e('ipv6', vif, net, tools, 'Static', 'fd00::5/64', '10.0.0.1'), ['INVALID_IP_ADDRESS_SPECIFIED', 'gateway'])
    const locked = { ...vif, locking_mode: 'locked', ipv4_allowed: ['10.0.0.6'] }
    assert.deepEqual(e('ipv4', locked, net, tools, 'Static', '10.0.0.5/24', ''), ['ADDRESS_VIOLATES_LOCKING_CONSTRAINT', '10.0.0.5/24'])
    assert.equal(e('ipv4', locked, net, tools, 'Static', '10.0.0.6/24', ''), undefined)
    assert.deepEqual(e('ipv4', vif, { default_locking_mode: 'locked' }, tools, 'Static', '10.0.0.5/24', ''), ['ADDRESS_VIOLATES_LOCKING_CONSTRAINT', '10.0.0.5/24'])
    // Mode None skips the address checks but still needs a guest that applies settings.
    assert.deepEqual(e('ipv4', vif, net, undefined, 'None', 'junk', 'junk'), ['VM_LACKS_FEATURE', 'OpaqueRef:vm'])
    assert.deepEqual(e('ipv6', vif, net, { 'feature-static-ip-setting': '0' }, 'Static', 'fd00::5/64', ''), ['VM_LACKS_FEATURE', 'OpaqueRef:vm'])
  })
})

describe('SDN_controller.introduce checks', () => {
  it('gives ssl controllers port 6632 by default and pssl ones neither address nor port', () => {
    assert.deepEqual(sdnControllerFields(0, 'ssl', '192.0.2.1', 0), { protocol: 'ssl', address: '192.0.2.1', port: 6632 })
    assert.deepEqual(sdnControllerFields(0, 'ssl', '192.0.2.1', 6640), { protocol: 'ssl', address: '192.0.2.1', port: 6640 })
    assert.deepEqual(sdnControllerFields(0, 'pssl', '', 0), { protocol: 'pssl', address: '', port: 0 })
  })
  it('refuses a second controller, bad addresses and ports', () => {
    fails(() => sdnControllerFields(1, 'ssl', '192.0.2.1', 0), 'OPERATION_NOT_ALLOWED', ['SDN controller has been configured. Please forget it first.'])
    fails(() => sdnControllerFields(0, 'pssl', '192.0.2.1', 0), 'INVALID_VALUE', ['address', '192.0.2.1'])
    fails(() => sdnControllerFields(0, 'pssl', '', 6640), 'INVALID_VALUE', ['port', '6640'])
    fails(() => sdnControllerFields(0, 'ssl', '', 0), 'INVALID_VALUE', ['address', ''])
    fails(() => sdnControllerFields(0, 'ssl', 'fd00::1', 0), 'INVALID_IP_ADDRESS_SPECIFIED', ['address'])
    fails(() => sdnControllerFields(0, 'ssl', '192.0.2.1', 70000), 'VALUE_NOT_SUPPORTED', ['port', '70000', 'Port out of range'])
  })
})

describe('pool.get_license_state', () => {
  it('is the lowest known edition and its earliest expiry', () => {
    assert.deepEqual(licenseState([{ edition: 'xcp-ng', license_params: {} }]), { edition: 'xcp-ng', expiry: 'never' })
    const hosts = [
      { edition: 'premium', license_params: { expiry: '20300101T00:00:00Z' } },
      { edition: 'free', license_params: { expiry: '20280101T00:00:00Z' } },
      { edition: 'free', license_params: { expiry: 'never' } },
      { edition: 'free', license_params: { expiry: '20270615T12:00:00Z' } },
      { edition: 'unknown', license_params: { expiry: '20200101T00:00:00Z' } },
    ]
    assert.deepEqual(licenseState(hosts, ['free', 'premium']), { edition: 'free', expiry: '2027-06-15T12:00:00Z' })
    assert.deepEqual(licenseState([{ edition: 'free', license_params: { expiry: '21000101T00:00:00Z' } }], ['free']), { edition: 'free', expiry: 'never' })
  })
})

describe('host.allowed_operations', () => {
  const host = buildRecord('host', { enabled: true, current_operations: {}, power_on_mode: '' })
  it('allows reboot, shutdown and apply_updates only on a disabled host, and power_on never (no power-on plugin)', () => {
    assert.deepEqual(allowedHostOperations('OpaqueRef:h', host, true), ['provision', 'evacuate', 'vm_start', 'vm_resume', 'vm_migrate', 'enable'])
    assert.deepEqual(allowedHostOperations('OpaqueRef:h', { ...host, enabled: false }, true), ['provision', 'evacuate', 'shutdown', 'reboot', 'vm_start', 'vm_resume', 'vm_migrate', 'apply_updates', 'enable'])
    assert.deepEqual(hostOperationErrors('OpaqueRef:h', host, true).get('reboot')?.description, ['HOST_NOT_DISABLED'])
    assert.deepEqual(hostOperationErrors('OpaqueRef:h', host, true).get('power_on')?.description, ['HOST_IS_LIVE', 'OpaqueRef:h'])
    assert.deepEqual(hostOperationErrors('OpaqueRef:h', host, false).get('power_on')?.description, ['HOST_POWER_ON_MODE_DISABLED'])
  })
  it('refuses what conflicts with an operation in progress', () => {
    const busy = buildRecord('host', { ...host, enabled: false, current_operations: { 'OpaqueRef:t': 'evacuate' } })
    assert.deepEqual(hostOperationErrors('OpaqueRef:h', busy, true).get('vm_resume')?.description, ['OTHER_OPERATION_IN_PROGRESS', 'host', 'OpaqueRef:h', 'evacuate', 'OpaqueRef:t'])
    assert.ok(allowedHostOperations('OpaqueRef:h', busy, true).includes('vm_start'))
    const updating = buildRecord('host', { ...busy, current_operations: { 'OpaqueRef:u': 'apply_updates' } })
    assert.ok(!allowedHostOperations('OpaqueRef:h', updating, true).includes('enable'))
  })
})

describe('host.install_server_certificate checks', () => {
  let dir: string
  const files: Record<string, string> = {}
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'flotilla-certs-'))
    const cert = (name: string, key: string, digest = '-sha256') => openssl('req', '-x509', '-new', '-key', key, digest, '-days', '30', '-subj', `/CN=${name}`, '-out', `${name}.pem`)
    openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'a.key')
    openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'b.key')
    openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024', '-out', 'small.key')
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ec.key')
    cert('a', 'a.key')
    cert('a384', 'a.key', '-sha384')
    cert('b', 'b.key')
    for (const f of ['a.key', 'b.key', 'small.key', 'ec.key', 'a.pem', 'a384.pem', 'b.pem']) files[f] = readFileSync(join(dir, f), 'utf8')
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('accepts a matching RSA key and SHA-256 certificate, with or without a chain', () => {
    const ok = validateServerCertificate(files['a.pem']!, files['a.key']!, '')
    assert.equal(ok.chain.length, 0)
    assert.equal(signatureAlgorithm(ok.cert.raw), '1.2.840.113549.1.1.11')
    assert.equal(validateServerCertificate(files['a.pem']!, files['a.key']!, files['b.pem']!).chain.length, 1)
  })
  it('refuses as xapi does, key first', () => {
    fails(() => validateServerCertificate(files['a.pem']!, 'not a key', ''), 'SERVER_CERTIFICATE_KEY_INVALID')
    fails(() => validateServerCertificate(files['a.pem']!, files['small.key']!, ''), 'SERVER_CERTIFICATE_KEY_RSA_LENGTH_NOT_SUPPORTED', ['1024'])
    fails(() => validateServerCertificate(files['a.pem']!, files['ec.key']!, ''), 'SERVER_CERTIFICATE_KEY_ALGORITHM_NOT_SUPPORTED', ['P256'])
    fails(() => validateServerCertificate('garbage', files['a.key']!, ''), 'SERVER_CERTIFICATE_INVALID')
    fails(() => validateServerCertificate(files['a.pem']! + files['b.pem']!, files['a.key']!, ''), 'SERVER_CERTIFICATE_INVALID')
    fails(() => validateServerCertificate(files['b.pem']!, files['a.key']!, ''), 'SERVER_CERTIFICATE_KEY_MISMATCH')
    fails(() => validateServerCertificate(files['a384.pem']!, files['a.key']!, ''), 'SERVER_CERTIFICATE_SIGNATURE_NOT_SUPPORTED')
    fails(() => validateServerCertificate(files['a.pem']!, files['a.key']!, 'junk'), 'SERVER_CERTIFICATE_CHAIN_INVALID')
    fails(() => validateServerCertificate(files['a.pem']!, files['a.key']!, `${files['b.pem']}junk`), 'SERVER_CERTIFICATE_CHAIN_INVALID')
  })
  it('refuses a certificate outside its validity, naming both times', () => {
    const cert = validateServerCertificate(files['a.pem']!, files['a.key']!, '').cert
    const later = new Date(Date.now() + 60 * 86400_000)
    fails(() => validateServerCertificate(files['a.pem']!, files['a.key']!, '', later), 'SERVER_CERTIFICATE_EXPIRED', [rfc3339(later), rfc3339(new Date(cert.validTo))])
    const earlier = new Date(Date.now() - 86400_000)
    fails(() => validateServerCertificate(files['a.pem']!, files['a.key']!, '', earlier), 'SERVER_CERTIFICATE_NOT_VALID_YET', [rfc3339(earlier), rfc3339(new Date(cert.validFrom))])
  })
})
