// message.*: the pool's alert log. Messages are ordinary pool database objects here.
import type { MessageRecord } from '../idl/records.js'
import { now, register, type CallContext } from './context.js'

function messagesWhere(ctx: CallContext, keep: (m: Readonly<MessageRecord>) => boolean) {
  const out: Record<string, Readonly<MessageRecord>> = {}
  for (const row of ctx.svc.db.rows('message')) {
    const rec = ctx.svc.db.replica.materialize(row)
    if (keep(rec)) out[row.ref] = rec
  }
  return out
}

register('message.create', (ctx, [name, priority, cls, objUuid, body]) =>
  ctx.svc.db.transact((tx) => tx.create('message', { name, priority, cls, obj_uuid: objUuid, body, timestamp: now() })),
)

register('message.get_since', (ctx, [since]) => messagesWhere(ctx, (m) => m.timestamp > String(since)))

register('message.get', (ctx, [cls, objUuid, since]) =>
  messagesWhere(ctx, (m) => m.cls === cls && m.obj_uuid === objUuid && m.timestamp > String(since)),
)

register('message.destroy_many', (ctx, [refs]) =>
  ctx.svc.db.transact((tx) => {
    for (const ref of refs) tx.delete('message', ref)
  }),
)
