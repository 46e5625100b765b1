// The shapes of event records and of event.from's batch, as the wire carries them.
export interface EventRecord {
  id: string
  timestamp: string
  class: string
  operation: 'add' | 'mod' | 'del'
  ref: string
  snapshot?: Readonly<Record<string, unknown>>
}

export interface EventBatch {
  events: EventRecord[]
  valid_ref_counts: Record<string, number>
  token: string
}
