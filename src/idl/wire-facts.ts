// Wire facts that xapi's published datamodel JSON does not carry, read once from xapi's IDL
// sources into wire-facts.json: the bound field pairs (`all_relations`), which messages have
// an Async form, and the defaults of trailing parameters that callers may omit.
import { readFileSync } from 'node:fs'

interface WireFacts {
  relations: { setClass: string; setField: string; refClass: string; refField: string }[]
  async: string[]
  paramDefaults: Record<string, Record<string, unknown>>
}

const facts = JSON.parse(readFileSync(new URL('../../../src/idl/wire-facts.json', import.meta.url), 'utf8')) as WireFacts

/** Bound fields: the set field lists the objects whose ref field points at its owner; never stored. */
export const RELATIONS = facts.relations

/** "Class.message" names that also exist as "Async.Class.message". */
export const ASYNC_MESSAGES: ReadonlySet<string> = new Set(facts.async)

/** Trailing parameters that callers may omit, with the value xapi assumes. */
export const PARAM_DEFAULTS = facts.paramDefaults

/** Classes whose changes produce no events (reference/xapi.md §5). */
export const NO_EVENT_CLASSES: ReadonlySet<string> = new Set([
  'session', 'user', 'secret', 'data_source', 'sr_stat', 'probe_result', 'vdi_nbd_server_info', 'auth', 'event',
])
