// host.get_server_certificate and host.install_server_certificate (xapi_host.ml, certificates.ml,
// gencert/lib.ml). The checks are xapi's, made here on the PEM text (certificates.ts); the files
// and the HTTPS server that presents them are the host agent's (agent/certificate.ts).
import { XapiError } from '../idl/errors.js'
import { formatDatetime } from '../idl/index.js'
import { register } from './context.js'
import { validateServerCertificate } from './certificates.js'

register('host.get_server_certificate', (ctx, [host]) => {
  ctx.svc.db.record('host', host)
  return ctx.svc.agentFor(host).call('host.server-certificate')
})

/**
 * Refused while HA is on; the key, certificate and chain must pass xapi's checks. The host's
 * TLS server then presents the new certificate (chain appended) to every new connection, and
 * its Certificate record of type host replaces the old one.
 */
register('host.install_server_certificate', async (ctx, [host, certificate, privateKey, chain]) => {
  ctx.svc.db.record('host', host)
  if (ctx.svc.db.record('pool', ctx.svc.db.first('pool')).ha_enabled) throw new XapiError('HA_IS_ENABLED', [])
  const valid = validateServerCertificate(String(certificate), String(privateKey), String(chain))
  await ctx.svc.agentFor(host).call('host.install-server-certificate', { key: String(privateKey), cert: valid.cert.toString(), chain: valid.chain.map((c) => c.toString()) })
  await ctx.svc.db.transact((tx) => {
    for (const r of [...ctx.svc.db.rows('Certificate')]) if (r.stored.host === host && r.stored.type === 'host' && tx.exists('Certificate', r.ref)) tx.delete('Certificate', r.ref)
    tx.create('Certificate', {
      name: '',
      type: 'host',
      host,
      not_before: formatDatetime(new Date(valid.cert.validFrom)),
      not_after: formatDatetime(new Date(valid.cert.validTo)),
      fingerprint: valid.cert.fingerprint256,
    })
  })
})
