// The messages xapi generates for every class from its fields: get_/set_/add_to_/remove_from_/
// add_/remove_, get_record, get_by_uuid, get_by_name_label, get_all, get_all_records(_where),
// and the default create/destroy. One implementation, driven by the datamodel.
import { constructorArgs, getClass, type ClassDef, type Field, type Message } from '../idl/index.js'
import { XapiError } from '../idl/errors.js'
import type { CallContext, Handler } from './context.js'
import { evaluateWhere, parseWhere } from './where.js'

type Rec = Readonly<Record<string, unknown>>
type MapValue = Record<string, unknown>

/** A copy of a map as a null-prototype object: "__proto__", "constructor" and the like are ordinary keys. */
function mapCopy(map: MapValue, without?: string): MapValue {
  const out: MapValue = Object.create(null)
  for (const [k, v] of Object.entries(map)) if (k !== without) out[k] = v
  return out
}

function fieldOf(cls: ClassDef, name: string): Field {
  const f = cls.fields.get(name)
  if (!f) throw new Error(`no field ${cls.name}.${name}`)
  return f
}

/** Splits an accessor name into its verb and field, checking the field's shape; verb '' if it is none. */
export function accessorOf(cls: ClassDef, msg: string): { verb: string; field?: Field } {
  const whole = ['get_record', 'get_by_uuid', 'get_by_name_label', 'get_all', 'get_all_records', 'get_all_records_where', 'create', 'destroy']
  if (whole.includes(msg)) return { verb: msg }
  for (const verb of ['get', 'set', 'add_to', 'remove_from', 'add', 'remove']) {
    const name = msg.startsWith(`${verb}_`) ? msg.slice(verb.length + 1) : undefined
    if (name === undefined || !cls.fields.has(name)) continue
    const field = fieldOf(cls, name)
    if ((verb === 'add_to' || verb === 'remove_from') && field.type.kind !== 'map') continue
    if ((verb === 'add' || verb === 'remove') && field.type.kind !== 'set') continue
    return { verb, field }
  }
  return { verb: '' }
}

const READ_VERBS = new Set(['get', 'get_record', 'get_by_uuid', 'get_by_name_label', 'get_all', 'get_all_records', 'get_all_records_where'])

/** Whether a message only reads the pool database: one of the getters xapi generates from the datamodel's classes and fields. */
export function readsOnly(msg: Message): boolean {
  return msg.implicit && READ_VERBS.has(accessorOf(getClass(msg.cls), msg.name).verb)
}

/** The generic implementation of an accessor-shaped message, or undefined if it needs a custom one. */
export function genericHandler(msg: Message): Handler | undefined {
  const cls = getClass(msg.cls)
  const { verb, field } = accessorOf(cls, msg.name)
  const db = (ctx: CallContext) => ctx.svc.db
  switch (verb) {
    case 'get_record':
      return (ctx, [self]) => db(ctx).record(cls.name, self as string)
    case 'get_by_uuid':
      return (ctx, [uuid]) => db(ctx).refByUuid(cls, uuid as string)
    case 'get_by_name_label':
      return (ctx, [label]) => [...db(ctx).rows(cls.name)].filter((r) => r.stored.name_label === label).map((r) => r.ref)
    case 'get_all':
      return (ctx) => db(ctx).refs(cls.name)
    case 'get_all_records':
      return (ctx) => allRecords(ctx, cls, () => true)
    case 'get_all_records_where':
      return (ctx, [expr]) => {
        const e = parseWhere(expr as string)
        return allRecords(ctx, cls, (rec) => evaluateWhere(e, rec))
      }
    case 'create':
      return (ctx, [args]) => createObject(ctx, cls, args as Record<string, unknown>)
    case 'destroy':
      return (ctx, [self]) => ctx.svc.db.transact((tx) => tx.delete(cls.name, self as string)).then(() => undefined)
    case 'get':
      return (ctx, [self]) => db(ctx).record(cls.name, self as string)[field!.name]
    case 'set':
      return (ctx, [self, value]) => setField(ctx, cls, self as string, field!, () => value)
    case 'add_to':
      return (ctx, [self, key, value]) =>
        setField(ctx, cls, self as string, field!, (old, rec) => {
          const map = old as MapValue
          if (Object.hasOwn(map, key as string)) throw new XapiError('MAP_DUPLICATE_KEY', [cls.name, field!.name, rec.uuid, key])
          const next = mapCopy(map)
          next[key as string] = value
          return next
        })
    case 'remove_from':
      return (ctx, [self, key]) =>
        setField(ctx, cls, self as string, field!, (old) => mapCopy(old as MapValue, key as string))
    case 'add':
      return (ctx, [self, value]) =>
        setField(ctx, cls, self as string, field!, (old) => ((old as unknown[]).includes(value) ? old : [...(old as unknown[]), value]))
    case 'remove':
      return (ctx, [self, value]) => setField(ctx, cls, self as string, field!, (old) => (old as unknown[]).filter((v) => v !== value))
  }
  return undefined
}

function allRecords(ctx: CallContext, cls: ClassDef, keep: (rec: Rec) => boolean): Record<string, Rec> {
  const out: Record<string, Rec> = {}
  const replica = ctx.svc.db.replica
  for (const row of replica.rows(cls.name)) {
    const rec = replica.materialize(row)
    if (keep(rec)) out[row.ref] = rec
  }
  return out
}

async function setField(ctx: CallContext, cls: ClassDef, self: string, field: Field, change: (old: unknown, rec: Rec) => unknown): Promise<void> {
  if (field.derivedFrom) throw new XapiError('OPERATION_NOT_ALLOWED', [`${cls.name}.${field.name} is computed from ${field.derivedFrom.refClass}.${field.derivedFrom.refField}`])
  await ctx.svc.db.transact((tx) => {
    const rec = tx.get(cls.name, self)
    const next = change(rec[field.name], rec)
    if (next !== rec[field.name]) tx.update(cls.name, self, { [field.name]: next })
  })
}

/** The generated constructor: RW and RO/constructor fields from the struct, the rest defaulted. */
export async function createObject(ctx: CallContext, cls: ClassDef, args: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
  const fields: Record<string, unknown> = constructorArgs(cls.name, args)
  return ctx.svc.db.transact((tx) => {
    for (const f of cls.storedFields) {
      const value = fields[f.name]
      if (f.type.kind === 'ref' && typeof value === 'string' && value !== 'OpaqueRef:NULL' && !tx.exists(f.type.cls, value))
        throw new XapiError('HANDLE_INVALID', [f.type.cls, value])
    }
    return tx.create(cls.name, { ...fields, ...extra })
  })
}
