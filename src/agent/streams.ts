// The agent's byte-stream endpoints (bulk disk data, consoles), next to its JSON calls.
import type { AgentStreams } from './server.js'
import type { VmRuntime } from './vms.js'

export function agentStreams(vms: VmRuntime): AgentStreams {
  void vms
  return { stream: {}, connect: {} }
}
