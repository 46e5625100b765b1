// The import graph of src/ and DESIGN §3's layering rules, read from the sources (a working
// tree or a git revision), for the layering test and the code-figures report.
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize } from 'node:path'

/** The folders each folder of src/ may import from (its own always). */
export const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  lib: [],
  idl: ['lib'],
  qemu: ['idl', 'lib'],
  vhd: ['idl', 'lib'],
  net: ['idl', 'lib'],
  storage: ['qemu', 'vhd', 'idl', 'lib'],
  // The RPC codec: a leaf, so that archive formats (xva) and the message layer can share it.
  rpc: ['idl', 'lib'],
  xva: ['rpc', 'idl', 'lib'],
  db: ['idl', 'lib'],
  agent: ['storage', 'net', 'qemu', 'vhd', 'xva', 'idl', 'lib'],
  xapi: ['agent', 'db', 'rpc', 'xva', 'idl', 'lib'],
  http: ['xapi', 'agent', 'db', 'rpc', 'xva', 'idl', 'lib'],
  cli: ['rpc', 'idl', 'lib'],
  // The composition root wires every layer together.
  daemon: ['http', 'xapi', 'agent', 'storage', 'net', 'qemu', 'db', 'rpc', 'xva', 'vhd', 'idl', 'lib'],
}

/** Layers above the agent reach it through its contract only, never its implementation. */
export const AGENT_CONTRACT = 'agent/contract.ts'
const ABOVE_AGENT = new Set(['xapi', 'http', 'rpc', 'db', 'cli'])

export interface Import {
  from: string
  to: string
}

export interface Sources {
  files: Map<string, string>
}

/** Every .ts file under src/ of the working tree at `root`, or of git revision `rev` there. */
export function readSources(root: string, rev?: string): Sources {
  const files = new Map<string, string>()
  if (rev) {
    const names = execFileSync('git', ['-C', root, 'ls-tree', '-r', '--name-only', rev, 'src'], { encoding: 'utf8' }).split('\n')
    for (const name of names.filter((n) => n.endsWith('.ts'))) files.set(name, execFileSync('git', ['-C', root, 'show', `${rev}:${name}`], { encoding: 'utf8', maxBuffer: 1 << 28 }))
    return { files }
  }
  const walk = (dir: string): void => {
    for (const entry of readdirSync(join(root, dir), { withFileTypes: true })) {
      const path = `${dir}/${entry.name}`
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts')) files.set(path, readFileSync(join(root, path), 'utf8'))
    }
  }
  walk('src')
  return { files }
}

const IMPORT_RE = /(?:^|\n)\s*(?:import|export)\s(?:[^'";]*?\sfrom\s)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g

/** The relative imports of each file, resolved to file paths under src/ (pure). */
export function importsOf(sources: Sources): Import[] {
  const out: Import[] = []
  for (const [from, text] of sources.files) {
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = (m[1] ?? m[2])!
      out.push({ from, to: normalize(join(dirname(from), spec)).replace(/\.js$/, '.ts') })
    }
  }
  return out
}

/** The folder of src/ a file belongs to ('src/xapi/vm.ts' → 'xapi'). */
export const folderOf = (path: string) => path.split('/')[1] ?? ''

/** Imports that break the layering rules, each with the rule it breaks (pure). */
export function layeringViolations(imports: readonly Import[]): { import: Import; rule: string }[] {
  const out: { import: Import; rule: string }[] = []
  for (const imp of imports) {
    const a = folderOf(imp.from)
    const b = folderOf(imp.to)
    if (!imp.to.startsWith('src/') || a === b) continue
    const allowed = ALLOWED[a]
    if (!allowed) out.push({ import: imp, rule: `src/${a} is not in the layering table` })
    else if (!allowed.includes(b)) out.push({ import: imp, rule: `src/${a} may not import src/${b}` })
    else if (b === 'agent' && ABOVE_AGENT.has(a) && imp.to !== `src/${AGENT_CONTRACT}`) out.push({ import: imp, rule: `src/${a} reaches the agent through ${AGENT_CONTRACT} only` })
  }
  return out
}

/** Cycles between folders, each as the folders along it (pure; Tarjan's strongly connected components). */
export function folderCycles(imports: readonly Import[]): string[][] {
  const edges = new Map<string, Set<string>>()
  for (const imp of imports) {
    const a = folderOf(imp.from)
    const b = folderOf(imp.to)
    if (a === b || !imp.to.startsWith('src/')) continue
    if (!edges.has(a)) edges.set(a, new Set())
    edges.get(a)!.add(b)
  }
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const components: string[][] = []
  const visit = (v: string) => {
    index.set(v, index.size)
    low.set(v, index.get(v)!)
    stack.push(v)
    onStack.add(v)
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v)!, low.get(w)!))
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = []
      let w: string
      do {
        w = stack.pop()!
        onStack.delete(w)
        component.push(w)
      } while (w !== v)
      if (component.length > 1) components.push(component.sort())
    }
  }
  for (const v of edges.keys()) if (!index.has(v)) visit(v)
  return components
}
