// agentFor in a pool: this host's own agent in-process, another host's over mutual TLS with the
// pool CA at the URL it publishes in the pool database. A host whose lease has gone is offline
// (HOST_OFFLINE [host]) without a connection attempt; transport failures are CANNOT_CONTACT_HOST.
import { AgentClient } from '../agent/client.js'
import type { Agent } from '../agent/contract.js'
import { tlsTransport, type AgentTls, type TlsAgentTransport } from '../agent/tls-transport.js'
import type { Database } from '../db/database.js'
import { liveKey } from '../db/presence.js'
import { XapiError } from '../idl/errors.js'
import { agentUrlKey } from '../xapi/index.js'

export function poolAgents(db: Database, hostRef: string, own: Agent, tls: AgentTls): { agentFor(host: string, opts?: { liveCheck: boolean }): Agent; close(): void } {
  const remote = new Map<string, { url: string; transport: TlsAgentTransport; agent: Agent }>()
  return {
    agentFor: (host, opts = { liveCheck: true }) => {
      if (host === hostRef) return own
      db.record('host', host)
      const url = db.raw(agentUrlKey(host))?.value
      if (!url || (opts.liveCheck && !db.raw(liveKey(host)))) throw new XapiError('HOST_OFFLINE', [host])
      const known = remote.get(host)
      if (known?.url === url) return known.agent
      known?.transport.close()
      const transport = tlsTransport({ url, hostRef: host, tls })
      const agent = new AgentClient(transport)
      remote.set(host, { url, transport, agent })
      return agent
    },
    close: () => {
      for (const r of remote.values()) r.transport.close()
      remote.clear()
    },
  }
}
