// The undo stack of multi-step operations (src/lib/undo.ts), and an operation undone through it.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { XapiError } from '../../src/idl/errors.js'
import { UndoStack, withUndo } from '../../src/lib/undo.js'
import { DEFAULT_SETTINGS, handlers, type Services } from '../../src/xapi/context.js'
import '../../src/xapi/storage.js'
import { memoryPoolDatabase } from '../helpers/memory-db.js'

describe('withUndo', () => {
  it('undoes the steps that succeeded, newest first, when a later one fails', async () => {
    const done: string[] = []
    await assert.rejects(
      withUndo('op', async (undo) => {
        for (const name of ['a', 'b', 'c']) undo.push(name, () => done.push(name))
        throw new Error('step d failed')
      }),
      /step d failed/,
    )
    assert.deepEqual(done, ['c', 'b', 'a'])
  })

  it('waits for asynchronous steps and undos in turn', async () => {
    const done: string[] = []
    const later = (name: string) => new Promise<void>((resolve) => setTimeout(() => (done.push(name), resolve()), name === 'b' ? 20 : 0))
    await assert.rejects(
      withUndo('op', async (undo) => {
        const made = await undo.step('a', async () => 'a-made', (result) => later(result))
        assert.equal(made, 'a-made')
        await undo.step('b', () => Promise.resolve(), () => later('b'))
        await undo.step('c', () => Promise.reject(new Error('c failed')), () => later('never'))
      }),
      /c failed/,
    )
    assert.deepEqual(done, ['b', 'a-made'])
  })

  it('logs an undo that fails, with the operation and the step, and still runs the others', async () => {
    const done: string[] = []
    const log: string[] = []
    await assert.rejects(
      withUndo(
        'VM.revert',
        async (undo) => {
          undo.push('VDI one', () => done.push('one'))
          undo.push('VDI two', async () => {
            throw new Error('image busy')
          })
          undo.push('VBD three', () => done.push('three'))
          throw new Error('failed')
        },
        (line) => log.push(line),
      ),
    )
    assert.deepEqual(done, ['three', 'one'])
    assert.deepEqual(log, ['VM.revert: undoing VDI two failed: image busy'])
  })

  it('rethrows the original error unchanged', async () => {
    const original = new XapiError('SR_BACKEND_FAILURE', ['1', '', 'mkfs failed'])
    const thrown = await withUndo('SR.create', async (undo) => {
      undo.push('step', () => {
        throw new XapiError('INTERNAL_ERROR', ['undo failed'])
      })
      throw original
    }, () => undefined).catch((e: unknown) => e)
    assert.equal(thrown, original)
  })

  it('undoes nothing on success and returns the result', async () => {
    const done: string[] = []
    const result = await withUndo('op', async (undo) => {
      undo.push('a', () => done.push('a'))
      return 42
    })
    assert.equal(result, 42)
    assert.deepEqual(done, [])
  })

  it('nested: a failed part undoes only its own steps; a part that succeeded is undone with the operation', async () => {
    const done: string[] = []
    await assert.rejects(
      withUndo('op', async (undo) => {
        undo.push('outer-1', () => done.push('outer-1'))
        await assert.rejects(
          undo.nest(async (inner) => {
            inner.push('failed-part', () => done.push('failed-part'))
            throw new Error('part failed')
          }),
        )
        assert.deepEqual(done, ['failed-part'])
        await undo.nest(async (inner) => inner.push('good-part', () => done.push('good-part')))
        undo.push('outer-2', () => done.push('outer-2'))
        throw new Error('later failure')
      }),
      /later failure/,
    )
    assert.deepEqual(done, ['failed-part', 'outer-2', 'good-part', 'outer-1'])
  })
})

describe('UndoStack', () => {
  it('kept across calls: rollback runs once, commit drops the undos', async () => {
    const done: string[] = []
    const stack = new UndoStack('import')
    stack.push('a', () => done.push('a'))
    await stack.rollback()
    await stack.rollback()
    assert.deepEqual(done, ['a'])
    stack.push('b', () => done.push('b'))
    stack.commit()
    await stack.rollback()
    assert.deepEqual(done, ['a'])
  })
})

describe('SR.create undone (in-memory pool, a stand-in agent)', () => {
  const HOST = 'OpaqueRef:host'
  async function setUp(failing: string) {
    const db = memoryPoolDatabase()
    await db.transact((tx) => {
      tx.create('pool', {})
      for (const type of ['ext', 'iso']) tx.create('SM', { type })
    })
    const calls: string[] = []
    const failure = new XapiError('SR_BACKEND_FAILURE', ['1', '', `${failing} failed`])
    const agent = {
      call: async (method: string) => {
        calls.push(method)
        if (method === failing) throw failure
        return method === 'sr.usage' ? { physicalSize: 1, physicalUtilisation: 0 } : method === 'sr.scan' ? [] : undefined
      },
    }
    const svc = { db, agentFor: () => agent, hostRef: HOST, settings: DEFAULT_SETTINGS, srRoot: '/srv/flotilla', publicUrl: '' } as unknown as Services
    const create = (config: Record<string, string>, type = 'ext') => handlers.get('SR.create')!({ svc, sessionRef: '', session: {}, wireName: 'SR.create' }, [HOST, config, 0, 'sr', '', type, 'user', false, {}]) as Promise<string>
    const records = () => ({ SR: db.refs('SR').length, PBD: db.refs('PBD').length })
    return { calls, failure, create, records }
  }

  it('a step failing after the SR was made forgets its records and removes what Flotilla made', async () => {
    const { calls, failure, create, records } = await setUp('sr.usage')
    assert.equal(await create({ device: '/dev/vdz' }).catch((e: unknown) => e), failure, 'the original error')
    assert.deepEqual(records(), { SR: 0, PBD: 0 })
    assert.deepEqual(calls, ['sr.make', 'sr.usage', 'sr.remove'])
  })

  it('a directory the caller named is left (unmounted), not removed', async () => {
    const { calls, create, records } = await setUp('sr.usage')
    await assert.rejects(create({ device: '/dev/vdz', path: '/srv/theirs' }))
    assert.deepEqual(records(), { SR: 0, PBD: 0 })
    assert.deepEqual(calls, ['sr.make', 'sr.usage', 'sr.detach'])
  })

  it('a failing make leaves nothing to undo; a success undoes nothing', async () => {
    const failed = await setUp('sr.make')
    await assert.rejects(failed.create({ device: '/dev/vdz' }))
    assert.deepEqual(failed.calls, ['sr.make'])
    const good = await setUp('none')
    await good.create({ device: '/dev/vdz' })
    assert.deepEqual(good.records(), { SR: 1, PBD: 1 })
    assert.deepEqual(good.calls, ['sr.make', 'sr.usage'])
  })
})
