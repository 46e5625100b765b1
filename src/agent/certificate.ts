// The host's TLS server certificate as the host keeps it: key.pem and cert.pem (the leaf, then
// any chain) in its TLS directory, the files daemon/tls.ts makes on a first start. Installing
// one writes both files and hands them to the running HTTPS server, whose new connections
// present it at once.
import { chmod, readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export interface ServerTls {
  /** The directory of key.pem and cert.pem. */
  dir: string
  /** Makes the running HTTPS server use this key and certificate (chain included). */
  reload?: (tls: { key: string; cert: string }) => void
}

const LEAF = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/

/** The host's certificate without its key or chain, as xapi's get_server_certificate answers it. */
export async function serverCertificate(tls: ServerTls): Promise<string> {
  const pem = await readFile(join(tls.dir, 'cert.pem'), 'utf8')
  const leaf = LEAF.exec(pem)
  if (!leaf) throw Object.assign(new Error('the server certificate is unreadable'), { code: 'CERTIFICATE_LIBRARY_CORRUPT', params: [] })
  return `${leaf[0]}\n`
}

async function replaceFile(path: string, text: string, mode: number): Promise<void> {
  const temp = `${path}.new`
  await writeFile(temp, text, { mode })
  await chmod(temp, mode)
  await rename(temp, path)
}

/** Writes an already checked key, certificate and chain, then reloads the server with them. */
export async function installServerCertificate(tls: ServerTls, { key, cert, chain }: { key: string; cert: string; chain: string[] }): Promise<void> {
  const certText = [cert, ...chain].map((c) => c.trim()).join('\n') + '\n'
  const keyText = key.trim() + '\n'
  // Checked first, so that a key the TLS library refuses leaves the files and server as they were.
  tls.reload?.({ key: keyText, cert: certText })
  await replaceFile(join(tls.dir, 'key.pem'), keyText, 0o600)
  await replaceFile(join(tls.dir, 'cert.pem'), certText, 0o644)
}
