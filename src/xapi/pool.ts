// pool.get_license_state (xapi_pool.ml, xapi_pool_license.ml, license_check.ml).
import { register } from './context.js'

type Rec = Readonly<Record<string, unknown>>

/**
 * The editions this toolstack's licensing knows, lowest first (xapi asks v6d; XCP-ng's v6d knows
 * one, "xcp-ng", free and without expiry).
 */
export const EDITIONS = ['xcp-ng']

/** xapi's serialize_expiry: "never" without an expiry (or at xapi's 2100 "never" date), else RFC 3339 in UTC. */
function serializeExpiry(expiry: Date | undefined): string {
  if (!expiry || expiry.getTime() === Date.UTC(2100, 0, 1)) return 'never'
  return expiry.toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** An ISO 8601 datetime as xapi writes them ("20380119T03:14:07Z" or "2038-01-19T03:14:07Z"). */
function parseIso8601(text: string): Date | undefined {
  const m = /^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):?(\d{2}):?(\d{2})(?:\.\d+)?Z?$/.exec(text)
  if (!m) return undefined
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[]
  return new Date(Date.UTC(y!, mo! - 1, d!, h!, mi!, s!))
}

/**
 * The pool's license: the lowest edition any host has (of those known), and the earliest expiry
 * among the hosts of that edition; an expiry of "never" or none counts as the latest.
 */
export function licenseState(hosts: Rec[], editions: string[] = EDITIONS): { edition: string; expiry: string } {
  const rank = (h: Rec) => editions.indexOf(String(h.edition))
  const known = hosts.filter((h) => rank(h) >= 0).sort((a, b) => rank(a) - rank(b))
  // xapi takes the head of an empty list here (an internal error): a pool whose hosts all have unknown editions.
  if (known.length === 0) throw new Error('no host has a known license edition')
  const edition = String(known[0]!.edition)
  const expiries = known
    .filter((h) => h.edition === edition)
    .map((h) => {
      const e = (h.license_params as Record<string, string>).expiry
      return e === undefined || e === 'never' ? undefined : parseIso8601(e)
    })
  const dated = expiries.filter((d): d is Date => d !== undefined).sort((a, b) => a.getTime() - b.getTime())
  return { edition, expiry: serializeExpiry(dated[0]) }
}

register('pool.get_license_state', (ctx, [ref]) => {
  ctx.svc.db.record('pool', ref)
  return licenseState([...ctx.svc.db.rows('host')].map((r) => ctx.svc.db.record('host', r.ref)))
})
