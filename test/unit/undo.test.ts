// The undo stack of multi-step operations (src/lib/undo.ts).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { XapiError } from '../../src/idl/errors.js'
import { UndoStack, withUndo } from '../../src/lib/undo.js'

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
