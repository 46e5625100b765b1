// The agent's byte-stream endpoints (bulk disk data, consoles), next to its JSON calls.
import type { AgentStreams } from './server.js'
import type { HostConsole } from './host-console.js'
import type { VmRuntime } from './vms.js'
import { exportStream, importStream } from './vdi-transfer.js'
import { consoleConnect } from './console.js'
import { xvaExportStream, xvaImportStream, xvaImportTargetsStream } from './xva-disks.js'

export function agentStreams(vms: VmRuntime, hostConsole?: HostConsole): AgentStreams {
  return { stream: { 'vdi.import': importStream, 'vdi.export': exportStream, 'xva.export': xvaExportStream, 'xva.import': xvaImportStream, 'xva.import-targets': xvaImportTargetsStream }, connect: { console: consoleConnect(vms, hostConsole) } }
}
