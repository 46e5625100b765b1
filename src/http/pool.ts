// GET /pool_secret on the master: what a joining host receives once it has logged in with the
// pool's administrator password (xapi: pool.initial_auth and the certificate exchange of a join).
// (A GET: every POST is an RPC call, as in xapi.) JSON out; errors as {"error": [code, params…]}.
import type { Services } from '../xapi/context.js'
import { poolSecretFor } from '../xapi/index.js'
import { asXapiError } from '../idl/errors.js'
import type { HttpRoute } from './server.js'
import { httpSession, statusFor } from './handler.js'

export function poolSecretRoute(svc: Services): HttpRoute {
  return {
    request: async (req, res) => {
      const answer = (status: number, body: unknown) => {
        const text = JSON.stringify(body)
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
        res.end(text)
      }
      try {
        const { session } = await httpSession(svc, req)
        answer(200, await poolSecretFor(svc, session))
      } catch (err) {
        const e = asXapiError(err)
        answer(statusFor(e.code), { error: e.description })
      }
    },
  }
}

/**
 * GET /pool_role on any host: whether it is master, and where its pool database's voters are. A
 * master starting again asks the pool's other hosts first (an emergency transition may have made
 * one of them master meanwhile), and a host sent to a new master finds its database here.
 */
export function poolRoleRoute(svc: Services): HttpRoute {
  return {
    request: async (_req, res) => {
      const master = svc.pool?.isMaster() ?? true
      // Only a master's are asked for: a member without quorum would not answer the member list.
      const etcdUrls = master ? ((await svc.membership?.voters().catch(() => [])) ?? []) : []
      const text = JSON.stringify({ master, host: svc.hostRef, etcdUrls, inContact: svc.pool?.inContact() ?? true, masterHost: svc.pool?.masterRef() ?? svc.hostRef })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
      res.end(text)
    },
  }
}
