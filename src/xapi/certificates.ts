// The checks host.install_server_certificate makes of what it is given (xapi's gencert/lib.ml),
// as pure functions over PEM text: the key, the certificate, their match, its signature, the chain.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { XapiError } from '../idl/errors.js'

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g

/** OIDs of key algorithms that ocaml-x509 does not name (its "Unknown algorithm <oid>"). */
const UNNAMED_KEY_OIDS: Record<string, string> = { dsa: '1.2.840.10040.4.1', 'rsa-pss': '1.2.840.113549.1.1.10', ed448: '1.3.101.113', x25519: '1.3.101.110', x448: '1.3.101.111', dh: '1.2.840.113549.1.3.1' }
const CURVES: Record<string, string> = { prime256v1: 'P256', secp384r1: 'P384', secp521r1: 'P521', secp224r1: 'P224' }

/** The signature algorithms xapi accepts on a server certificate: RSA or ECDSA with SHA-256 or SHA-512. */
const SIGNATURES = new Set(['1.2.840.113549.1.1.11', '1.2.840.113549.1.1.13', '1.2.840.10045.4.3.2', '1.2.840.10045.4.3.4'])

/** "2024-01-01T00:00:00Z", as xapi prints the times of its certificate errors. */
export const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z')

/** xapi's validate_private_key: a PEM key that is RSA of 2048 to 4096 bits. */
export function validatePrivateKey(pem: string): KeyObject {
  let key: KeyObject
  try {
    key = createPrivateKey({ key: pem, format: 'pem' })
  } catch {
    throw new XapiError('SERVER_CERTIFICATE_KEY_INVALID', [])
  }
  const type = key.asymmetricKeyType ?? ''
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0
    if (bits < 2048 || bits > 4096) throw new XapiError('SERVER_CERTIFICATE_KEY_RSA_LENGTH_NOT_SUPPORTED', [bits])
    return key
  }
  const curve = String(key.asymmetricKeyDetails?.namedCurve ?? '')
  const name = type === 'ec' ? (CURVES[curve] ?? curve) : type === 'ed25519' ? 'ED25519' : (UNNAMED_KEY_OIDS[type] ?? type)
  throw new XapiError('SERVER_CERTIFICATE_KEY_ALGORITHM_NOT_SUPPORTED', [name])
}

/** One DER TLV at `at`: where its content starts and ends. */
function tlv(der: Buffer, at: number): { tag: number; start: number; end: number } {
  const tag = der[at]!
  let len = der[at + 1]!
  let start = at + 2
  if (len & 0x80) {
    const n = len & 0x7f
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i]!
    start += n
  }
  if (start + len > der.length) throw new Error('truncated DER')
  return { tag, start, end: start + len }
}

function oidText(bytes: Buffer): string {
  const parts = [Math.floor(bytes[0]! / 40), bytes[0]! % 40]
  let v = 0
  for (const b of bytes.subarray(1)) {
    v = v * 128 + (b & 0x7f)
    if (!(b & 0x80)) (parts.push(v), (v = 0))
  }
  return parts.join('.')
}

/** The OID of a certificate's signatureAlgorithm (Certificate ::= SEQUENCE { tbs, signatureAlgorithm, signature }). */
export function signatureAlgorithm(der: Buffer): string {
  const cert = tlv(der, 0)
  const tbs = tlv(der, cert.start)
  const alg = tlv(der, tbs.end)
  const oid = tlv(der, alg.start)
  if (oid.tag !== 0x06) throw new Error('no signature algorithm')
  return oidText(der.subarray(oid.start, oid.end))
}

export interface ValidCertificate {
  cert: X509Certificate
  chain: X509Certificate[]
}

/**
 * xapi's install_server_certificate checks, in its order: the key; the certificate decodes and
 * is valid now; the key is the certificate's; it is signed with SHA-256 or SHA-512; a chain
 * given ("" for none) holds at least one certificate and only certificates.
 */
export function validateServerCertificate(certificate: string, privateKey: string, chain: string, now = new Date()): ValidCertificate {
  const key = validatePrivateKey(privateKey)
  const blocks = certificate.match(PEM_CERTIFICATE) ?? []
  let cert: X509Certificate
  try {
    if (blocks.length !== 1) throw new Error('not one certificate')
    cert = new X509Certificate(blocks[0]!)
  } catch {
    throw new XapiError('SERVER_CERTIFICATE_INVALID', [])
  }
  const notBefore = new Date(cert.validFrom)
  const notAfter = new Date(cert.validTo)
  if (now < notBefore) throw new XapiError('SERVER_CERTIFICATE_NOT_VALID_YET', [rfc3339(now), rfc3339(notBefore)])
  if (now > notAfter) throw new XapiError('SERVER_CERTIFICATE_EXPIRED', [rfc3339(now), rfc3339(notAfter)])
  if (!cert.checkPrivateKey(key)) throw new XapiError('SERVER_CERTIFICATE_KEY_MISMATCH', [])
  let signature = ''
  try {
    signature = signatureAlgorithm(cert.raw)
  } catch {
    // An unreadable algorithm is not one of the accepted ones.
  }
  if (!SIGNATURES.has(signature)) throw new XapiError('SERVER_CERTIFICATE_SIGNATURE_NOT_SUPPORTED', [])
  if (chain === '') return { cert, chain: [] }
  const chainBlocks = chain.match(PEM_CERTIFICATE) ?? []
  const rest = chain.replace(PEM_CERTIFICATE, '').trim()
  if (chainBlocks.length === 0 || rest !== '') throw new XapiError('SERVER_CERTIFICATE_CHAIN_INVALID', [])
  try {
    return { cert, chain: chainBlocks.map((b) => new X509Certificate(b)) }
  } catch {
    throw new XapiError('SERVER_CERTIFICATE_CHAIN_INVALID', [])
  }
}
