// The pool's trust (daemon/pool-ca.ts) with the real openssl in a temporary directory: the host
// certificate is the pool CA's and names the host, it follows the address and a replaced CA,
// and a joiner's adopted CA takes the place of its own.
import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { statSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { adoptPoolCa, ensurePoolTrust, makePoolCa, readPoolCa, readPoolTls, type PoolTls } from '../../src/daemon/pool-ca.js'

/** Whether `cert` is signed by `ca`, as a TLS peer trusting `ca` would find. */
function issuedBy(cert: string, ca: string): boolean {
  const c = new X509Certificate(cert)
  const authority = new X509Certificate(ca)
  return c.checkIssued(authority) && c.verify(authority.publicKey)
}

describe('pool CA and host certificates', () => {
  let root: string
  const dirA = () => join(root, 'a')
  const dirB = () => join(root, 'b')
  let a: PoolTls

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'pool-ca-'))
    a = await ensurePoolTrust(dirA(), 'host-a', '192.0.2.10')
  })
  after(() => rm(root, { recursive: true, force: true }))

  it('makes a CA and a host certificate it signed, for server and client use, naming the host', () => {
    const ca = new X509Certificate(a.ca)
    const cert = new X509Certificate(a.cert)
    assert.equal(ca.ca, true)
    assert.equal(cert.ca, false)
    assert.ok(issuedBy(a.cert, a.ca))
    assert.deepEqual(cert.subjectAltName?.split(', ').sort(), ['DNS:host-a', 'IP Address:127.0.0.1', 'IP Address:192.0.2.10'])
    assert.deepEqual(cert.keyUsage?.sort(), ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'])
    assert.ok(cert.checkPrivateKey(createPrivateKey(a.key)))
  })

  it('keeps the keys readable by their owner only', () => {
    for (const file of ['ca-key.pem', 'host-key.pem']) assert.equal(statSync(join(dirA(), file)).mode & 0o777, 0o600, file)
  })

  it('keeps CA and certificate across starts, and reissues the certificate for a new address', async () => {
    assert.deepEqual(await ensurePoolTrust(dirA(), 'host-a', '192.0.2.10'), a)
    const moved = await ensurePoolTrust(dirA(), 'host-a', '192.0.2.11')
    assert.equal(moved.ca, a.ca)
    assert.notEqual(moved.cert, a.cert)
    assert.ok(new X509Certificate(moved.cert).checkIP('192.0.2.11'))
    assert.ok(issuedBy(moved.cert, a.ca))
    a = moved
  })

  it('keeps the certificate of a host addressed by IPv6 across starts', async () => {
    const dir = join(root, 'v6')
    const first = await ensurePoolTrust(dir, 'host-6', '2001:db8::5')
    assert.ok(new X509Certificate(first.cert).checkIP('2001:db8::5'))
    assert.deepEqual(await ensurePoolTrust(dir, 'host-6', '2001:db8::5'), first)
  })

  it('replaces an unreadable host certificate, and a CA whose key is not its own', async () => {
    const dir = join(root, 'damaged')
    const first = await ensurePoolTrust(dir, 'host-d', '192.0.2.50')
    await writeFile(join(dir, 'host.pem'), 'garbage')
    const reissued = await ensurePoolTrust(dir, 'host-d', '192.0.2.50')
    assert.equal(reissued.ca, first.ca)
    assert.ok(issuedBy(reissued.cert, first.ca))
    await writeFile(join(dir, 'ca-key.pem'), (await readPoolCa(dirA())).caKey)
    const fresh = await ensurePoolTrust(dir, 'host-d', '192.0.2.50')
    assert.notEqual(fresh.ca, first.ca)
    assert.ok(issuedBy(fresh.cert, fresh.ca))
  })

  it('does not take a certificate of another CA for its own', async () => {
    const b = await ensurePoolTrust(dirB(), 'host-b', '192.0.2.20')
    assert.notEqual(b.ca, a.ca)
    assert.ok(!issuedBy(b.cert, a.ca))
    assert.ok(!issuedBy(a.cert, b.ca))
  })

  it('reissues the host certificate once the CA is replaced (an ejected host\'s fresh CA)', async () => {
    const dir = join(root, 'ejected')
    const before = await ensurePoolTrust(dir, 'host-e', '192.0.2.30')
    await makePoolCa(dir)
    const after = await ensurePoolTrust(dir, 'host-e', '192.0.2.30')
    assert.notEqual(after.ca, before.ca)
    assert.ok(issuedBy(after.cert, after.ca))
    assert.ok(!issuedBy(after.cert, before.ca))
  })

  it('adopts the pool\'s CA at join and issues the joiner a certificate of it', async () => {
    const poolCa = await readPoolCa(dirA())
    const joined = await adoptPoolCa(dirB(), poolCa, 'host-b', '192.0.2.20')
    assert.equal(joined.ca, a.ca)
    assert.deepEqual(await readPoolCa(dirB()), poolCa)
    assert.deepEqual(await readPoolTls(dirB()), joined)
    assert.ok(issuedBy(joined.cert, a.ca))
    assert.deepEqual(new X509Certificate(joined.cert).subjectAltName?.split(', ').sort(), ['DNS:host-b', 'IP Address:127.0.0.1', 'IP Address:192.0.2.20'])
    assert.equal(statSync(join(dirB(), 'ca-key.pem')).mode & 0o777, 0o600)
  })

  it('refuses to adopt a CA whose key is not its own, leaving the trust as it was', async () => {
    const dir = join(root, 'refusing')
    const own = await ensurePoolTrust(dir, 'host-r', '192.0.2.40')
    const { caCert } = await readPoolCa(dirA())
    const { caKey } = await readPoolCa(join(root, 'ejected'))
    await assert.rejects(adoptPoolCa(dir, { caCert, caKey }, 'host-r', '192.0.2.40'), /does not belong/)
    await assert.rejects(adoptPoolCa(dir, { caCert: a.cert, caKey: a.key }, 'host-r', '192.0.2.40'), /not a CA/)
    assert.deepEqual(await readPoolTls(dir), own)
  })
})
