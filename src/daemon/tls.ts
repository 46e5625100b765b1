// The host's self-signed TLS certificate, made once with Debian's openssl.
import { chmodSync, existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { isIP } from 'node:net'
import { runProgram } from '../lib/programs.js'

export async function ensureCertificate(dir: string, hostname: string, address: string): Promise<{ key: string; cert: string }> {
  const keyFile = join(dir, 'key.pem')
  const certFile = join(dir, 'cert.pem')
  if (!existsSync(keyFile) || !existsSync(certFile)) {
    const san = [`DNS:${hostname}`, isIP(address) ? `IP:${address}` : `DNS:${address}`].join(',')
    await runProgram('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650', '-subj', `/CN=${hostname}`, '-addext', `subjectAltName=${san}`, '-keyout', keyFile, '-out', certFile])
  }
  chmodSync(keyFile, 0o600)
  return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8') }
}
