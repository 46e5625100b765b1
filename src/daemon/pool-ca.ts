// The pool's trust (pool-plan "Trust"): a pool CA and this host's certificate signed by it, made
// with Debian's openssl in the pool directory (<data>/pool). Every host starts as a pool of one
// with its own CA; a joiner adopts the master's CA and issues itself a new host certificate; an
// ejected host makes a fresh CA (makePoolCa, then ensurePoolTrust reissues the host certificate,
// since the old one is no longer the CA's). Etcd and the inter-host agent channel take the
// result, {ca, cert, key}, as their mutual-TLS options.
import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { runProgram } from '../lib/programs.js'

/** PEM texts for a TLS endpoint of the pool: the pool CA, this host's certificate and its key. */
export interface PoolTls {
  ca: string
  cert: string
  key: string
}

/** The pool CA as the master hands it to a joiner. */
export interface PoolCa {
  caCert: string
  caKey: string
}

const CA_CERT = 'ca.pem'
const CA_KEY = 'ca-key.pem'
const HOST_CERT = 'host.pem'
const HOST_KEY = 'host-key.pem'
const TEN_YEARS = '3650'

const CA_EXTENSIONS = ['basicConstraints = critical, CA:TRUE, pathlen:0', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash']

// Etcd's peers present the same certificate as server and as client, so a host certificate is both.
const hostExtensions = (subjectAltName: string) => [
  'basicConstraints = critical, CA:FALSE',
  'keyUsage = critical, digitalSignature',
  'extendedKeyUsage = serverAuth, clientAuth',
  `subjectAltName = ${subjectAltName}`,
  'subjectKeyIdentifier = hash',
  'authorityKeyIdentifier = keyid',
]

// Anything else could not be a DNS name, and could break the config file a SAN goes into.
const isDnsName = (name: string) => /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(name)

/** A host's names: its address (an IP, or a DNS name), loopback, and its hostname, those that are valid. */
function hostNames(hostname: string, address: string): string[] {
  return [...new Set([address, '127.0.0.1', hostname])].filter((n) => isIP(n) || isDnsName(n))
}

const subjectAltName = (names: string[]) => names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(', ')

/**
 * Runs `openssl req -x509` writing a key and certificate to temporary names, then renames both
 * into place: a crash leaves at worst a key that is not its certificate's, which ensurePoolTrust
 * replaces.
 */
async function makeKeyAndCertificate(dir: string, files: { cert: string; key: string }, extensions: string[], args: string[]): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const config = join(dir, '.openssl.cnf')
  const newKey = join(dir, `${files.key}.new`)
  const newCert = join(dir, `${files.cert}.new`)
  await writeFile(config, ['[req]', 'distinguished_name = dn', '[dn]', '[extensions]', ...extensions, ''].join('\n'))
  try {
    await runProgram('openssl', ['req', '-x509', '-config', config, '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-sha256', '-days', TEN_YEARS, '-keyout', newKey, '-out', newCert, '-extensions', 'extensions', ...args])
    await chmod(newKey, 0o600)
    await rename(newKey, join(dir, files.key))
    await rename(newCert, join(dir, files.cert))
  } finally {
    await rm(config, { force: true })
    await rm(newKey, { force: true })
    await rm(newCert, { force: true })
  }
}

/** Makes a fresh pool CA in `dir` (ca.pem, ca-key.pem), replacing any there. */
export async function makePoolCa(dir: string): Promise<void> {
  // A name of its own, so that two pools' CAs are never taken for one another by name.
  const subject = `/CN=Flotilla pool CA ${randomBytes(8).toString('hex')}`
  await makeKeyAndCertificate(dir, { cert: CA_CERT, key: CA_KEY }, CA_EXTENSIONS, ['-subj', subject])
}

/** Issues this host's certificate (host.pem, host-key.pem) from the pool CA in `dir`. */
export async function issueHostCertificate(dir: string, hostname: string, address: string): Promise<void> {
  const args = ['-subj', `/CN=${hostname.replace(/[/=\\]/g, '_')}`, '-CA', join(dir, CA_CERT), '-CAkey', join(dir, CA_KEY)]
  await makeKeyAndCertificate(dir, { cert: HOST_CERT, key: HOST_KEY }, hostExtensions(subjectAltName(hostNames(hostname, address))), args)
}

/** The pool CA of `dir`, as the master hands it to a joiner. */
export async function readPoolCa(dir: string): Promise<PoolCa> {
  return { caCert: await readFile(join(dir, CA_CERT), 'utf8'), caKey: await readFile(join(dir, CA_KEY), 'utf8') }
}

/** The pool CA, host certificate and key of `dir`, as TLS options take them. */
export async function readPoolTls(dir: string): Promise<PoolTls> {
  return { ca: await readFile(join(dir, CA_CERT), 'utf8'), cert: await readFile(join(dir, HOST_CERT), 'utf8'), key: await readFile(join(dir, HOST_KEY), 'utf8') }
}

/** Whether `dir` has a CA certificate and the key of that certificate. */
async function poolCaUsable(dir: string): Promise<boolean> {
  if (!existsSync(join(dir, CA_CERT)) || !existsSync(join(dir, CA_KEY))) return false
  try {
    const { caCert, caKey } = await readPoolCa(dir)
    const cert = new X509Certificate(caCert)
    return cert.ca && cert.checkPrivateKey(createPrivateKey(caKey))
  } catch {
    return false
  }
}

/** Whether `tls.cert` is a readable certificate of `tls.ca` for `tls.key`, naming each of this host's names. */
function hostCertificateFits(tls: PoolTls, hostname: string, address: string): boolean {
  try {
    const ca = new X509Certificate(tls.ca)
    const cert = new X509Certificate(tls.cert)
    if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey) || !cert.checkPrivateKey(createPrivateKey(tls.key))) return false
    // checkIP and checkHost rather than comparing text: openssl prints IPv6 addresses expanded.
    const names = (name: string) => (isIP(name) ? cert.checkIP(name) : cert.checkHost(name, { subject: 'never', wildcards: false })) !== undefined
    return hostNames(hostname, address).every(names)
  } catch {
    // An unreadable certificate or key is replaced like a missing one.
    return false
  }
}

/**
 * This host's pool trust at start: makes the CA if there is none (or its key is not its
 * certificate's: a crash while it was written), and (re)issues the host
 * certificate if there is none, if it is not the CA's (a CA replaced since), or if it does not
 * name the host's address or hostname (either changed).
 */
export async function ensurePoolTrust(dir: string, hostname: string, address: string): Promise<PoolTls> {
  if (!(await poolCaUsable(dir))) await makePoolCa(dir)
  if (existsSync(join(dir, HOST_CERT)) && existsSync(join(dir, HOST_KEY))) {
    const tls = await readPoolTls(dir)
    if (hostCertificateFits(tls, hostname, address)) return tls
  }
  await issueHostCertificate(dir, hostname, address)
  return readPoolTls(dir)
}

/**
 * Replaces the pool CA of `dir` with `ca` (a joiner takes the master's) and issues a new host
 * certificate from it. A certificate that is not a CA's, or a key that is not its, is refused
 * before anything is replaced.
 */
export async function adoptPoolCa(dir: string, ca: PoolCa, hostname: string, address: string): Promise<PoolTls> {
  const cert = new X509Certificate(ca.caCert)
  if (!cert.ca) throw new Error('the pool CA certificate is not a CA certificate')
  if (!cert.checkPrivateKey(createPrivateKey(ca.caKey))) throw new Error('the pool CA key does not belong to its certificate')
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const newKey = join(dir, `${CA_KEY}.new`)
  const newCert = join(dir, `${CA_CERT}.new`)
  await writeFile(newKey, ca.caKey, { mode: 0o600 })
  await chmod(newKey, 0o600)
  await writeFile(newCert, ca.caCert)
  await rename(newKey, join(dir, CA_KEY))
  await rename(newCert, join(dir, CA_CERT))
  await issueHostCertificate(dir, hostname, address)
  return readPoolTls(dir)
}
