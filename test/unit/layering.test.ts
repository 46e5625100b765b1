// DESIGN §3's rules of the house, checked on the sources: imports point down only, no cycles
// between folders, and the layers above the agent reach it through its contract only.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ALLOWED, folderCycles, importsOf, layeringViolations, readSources, type Sources } from '../helpers/source-graph.js'

const ROOT = fileURLToPath(new URL('../../..', import.meta.url))

const sourcesOf = (files: Record<string, string>): Sources => ({ files: new Map(Object.entries(files)) })

describe('layering rules', () => {
  it('places every folder of src/ in the layering table', () => {
    const folders = readdirSync(`${ROOT}/src`, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)
    assert.deepEqual(folders.filter((f) => !(f in ALLOWED)), [])
  })

  it('finds no cycle between folders of src/', () => {
    assert.deepEqual(folderCycles(importsOf(readSources(ROOT))), [])
  })

  it('finds no import against the layering rules', () => {
    assert.deepEqual(
      layeringViolations(importsOf(readSources(ROOT))).map((v) => `${v.import.from} -> ${v.import.to}: ${v.rule}`),
      [],
    )
  })

  it('resolves static, re-export, side-effect and dynamic imports', () => {
    const imports = importsOf(
      sourcesOf({
        'src/xapi/a.ts': "import { x } from '../db/b.js'\nexport type { Y } from './c.js'\nimport '../lib/d.js'\nconst e = await import('../agent/e.js')\nimport { readFile } from 'node:fs'",
      }),
    )
    assert.deepEqual(
      imports.map((i) => i.to),
      ['src/db/b.ts', 'src/xapi/c.ts', 'src/lib/d.ts', 'src/agent/e.ts'],
    )
  })

  it('tells an upward import, an unknown folder and an agent implementation import apart', () => {
    const rules = layeringViolations(
      importsOf(
        sourcesOf({
          'src/qemu/a.ts': "import { h } from '../xapi/h.js'",
          'src/extra/b.ts': "import { l } from '../lib/l.js'",
          'src/xapi/c.ts': "import type { VmRuntime } from '../agent/vms.js'\nimport type { AgentCalls } from '../agent/contract.js'",
        }),
      ),
    ).map((v) => v.rule)
    assert.deepEqual(rules, ['src/qemu may not import src/xapi', 'src/extra is not in the layering table', 'src/xapi reaches the agent through agent/contract.ts only'])
  })

  it('finds a cycle through three folders and none in a tree', () => {
    const cycle = sourcesOf({ 'src/xapi/a.ts': "import '../xva/b.js'", 'src/xva/b.ts': "import '../rpc/c.js'", 'src/rpc/c.ts': "import '../xapi/a.js'", 'src/lib/d.ts': '' })
    assert.deepEqual(folderCycles(importsOf(cycle)), [['rpc', 'xapi', 'xva']])
    const tree = sourcesOf({ 'src/xapi/a.ts': "import '../xva/b.js'\nimport '../rpc/c.js'", 'src/xva/b.ts': "import '../rpc/c.js'", 'src/rpc/c.ts': '' })
    assert.deepEqual(folderCycles(importsOf(tree)), [])
  })
})
