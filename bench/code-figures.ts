// Static figures of the code base (issue 15's list), for a git revision (the baseline) beside
// the working tree, counted the same way for both:
//   node dist/bench/code-figures.js [BASE_REV]
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { folderCycles, folderOf, importsOf, layeringViolations, readSources, type Sources } from '../test/helpers/source-graph.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** A cast of a record field: `x.f as string`, `as string[]`, `as Record<…>`, or `Number(x.f)` / `String(x['f'])` / `Boolean(x.f)`. */
const RECORD_CAST = / as (?:string|number|boolean|string\[\]|Record<[^>]*>)(?![\w$])|\b(?:Number|String|Boolean)\(\s*[\w$]+(?:\??\.[\w$]+|\[['"][\w$]+['"]\])+\s*\)/g
/** A QMP command sent by name: `.execute('cont')`, `execute("human-monitor-command")`. */
const QMP_COMMAND = /\bexecute(?:<[^>]*>)?\(\s*['"][a-z][\w-]*['"]/g
/** A XenAPI error raised by code. */
const RAISED_CODE = /\bXapiError\(\s*'([A-Z][A-Z0-9_]+)'/g

const count = (text: string, re: RegExp) => text.match(re)?.length ?? 0

function figures(sources: Sources, datamodelErrors: Set<string>) {
  let casts = 0
  let qmp = 0
  const unknownCodes = new Set<string>()
  for (const [path, text] of sources.files) {
    const folder = folderOf(path)
    if (folder === 'xapi' || folder === 'http') casts += count(text, RECORD_CAST)
    if (folder !== 'qemu') qmp += count(text, QMP_COMMAND)
    for (const m of text.matchAll(RAISED_CODE)) if (!datamodelErrors.has(m[1]!)) unknownCodes.add(m[1]!)
  }
  const imports = importsOf(sources)
  return {
    'casts on record fields in src/xapi and src/http': casts,
    'raw QMP command names outside src/qemu': qmp,
    'imports against the layering rules': layeringViolations(imports).length,
    'cycles between folders': folderCycles(imports).length,
    'error codes raised that are not in the datamodel': unknownCodes.size,
    'lines of TypeScript in src': [...sources.files.values()].reduce((n, t) => n + t.split('\n').length, 0),
    _unknownCodes: [...unknownCodes].sort().join(' '),
  }
}

const errorsAt = (text: string) => new Set(Object.keys((JSON.parse(text) as { errors: Record<string, string[]> }).errors))

const base = process.argv[2] ?? 'HEAD'
const before = figures(readSources(ROOT, base), errorsAt(execFileSync('git', ['-C', ROOT, 'show', `${base}:src/idl/datamodel.json`], { encoding: 'utf8', maxBuffer: 1 << 28 })))
const after = figures(readSources(ROOT), errorsAt(readFileSync(`${ROOT}/src/idl/datamodel.json`, 'utf8')))
console.log(`figure\t${base}\tworking tree`)
for (const key of Object.keys(before) as (keyof typeof before)[]) {
  if (key.startsWith('_')) continue
  console.log(`${key}\t${before[key]}\t${after[key]}`)
}
console.log(`codes not in the datamodel, ${base}: ${before._unknownCodes || '-'}`)
console.log(`codes not in the datamodel, now: ${after._unknownCodes || '-'}`)
