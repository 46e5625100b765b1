#!/usr/bin/env node
// Generates src/idl/datamodel.json from xapi's own datamodel (../shared/reference/xenapi-datamodel),
// keeping the facts Flotilla derives its wire layer, accessors, validation and xe from, and
// dropping Citrix's prose. Run it when the reference datamodel changes; the output is committed
// because a clone of this repository does not carry ../shared. Then run `npm run gen-records`:
// src/idl/records.ts, the TypeScript types of the datamodel, is rendered from this output.
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const source = process.argv[2] ?? join(root, '..', 'shared', 'reference', 'xenapi-datamodel')
const classes = JSON.parse(readFileSync(join(source, 'xenapi.json'), 'utf8'))
const errors = JSON.parse(readFileSync(join(source, 'errors.json'), 'utf8')).errors

const STATES = { Published_s: 'published', Prototyped_s: 'prototyped', Deprecated_s: 'deprecated', Removed_s: 'removed' }
const release = (lifecycle) =>
  (lifecycle.transitions.find((t) => t.transition === 'published' || t.transition === 'prototyped') ?? lifecycle.transitions[0])?.release ?? ''

const out = {
  source: 'xapi doc/data/xenapi.json (see ../shared/reference/xenapi-datamodel/README.md)',
  classes: classes.map((c) => ({
    name: c.name,
    state: STATES[c.lifecycle.state],
    release: release(c.lifecycle),
    fields: c.fields.map((f) => ({
      name: f.name,
      type: f.type,
      qualifier: f.qualifier,
      ...(f.default !== undefined ? { default: f.default } : {}),
      state: STATES[f.lifecycle.state],
      release: release(f.lifecycle),
    })),
    messages: c.messages.map((m) => ({
      name: m.name,
      params: m.params.map((p) => ({ name: p.name, type: p.type })),
      result: m.result[0],
      implicit: m.implicit,
      errors: m.errors.map((e) => e.name),
      state: STATES[m.lifecycle.state],
      release: release(m.lifecycle),
    })),
    enums: c.enums.map((e) => ({ name: e.name, values: e.values.map((v) => v.name) })),
  })),
  errors: Object.fromEntries(errors.map((e) => [e.name, e.params])),
}
writeFileSync(join(root, 'src', 'idl', 'datamodel.json'), JSON.stringify(out) + '\n')
console.log(`wrote ${out.classes.length} classes, ${Object.keys(out.errors).length} errors`)
