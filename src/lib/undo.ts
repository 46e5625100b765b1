// The undo stack of a multi-step operation (DESIGN §3): each step that succeeded registers how
// to take it back; if a later step fails, the undos run newest first, so that the operation
// leaves nothing half-made. An undo that fails is logged and the others still run; the caller
// sees the operation's own error, unchanged.

/** Where the failures of undo steps are reported (the daemon logs to stderr). */
export type UndoLog = (message: string) => void

const stderrLog: UndoLog = (message) => console.error(message)

interface UndoStep {
  description: string
  undo: () => unknown
}

export class UndoStack {
  private steps: UndoStep[] = []

  /** `operation` names the operation in the log ("VM.revert"). */
  constructor(
    readonly operation: string,
    private readonly log: UndoLog = stderrLog,
  ) {}

  /** Registers the undo of a step that has just succeeded; `description` says what it made ("VDI OpaqueRef:…"). */
  push(description: string, undo: () => unknown): void {
    this.steps.push({ description, undo })
  }

  /** Runs one step (`make`) and, once it succeeded, registers `undo` for its result. */
  async step<T>(description: string, make: () => Promise<T> | T, undo: (result: T) => unknown): Promise<T> {
    const result = await make()
    this.push(description, () => undo(result))
    return result
  }

  /** The operation succeeded: nothing is to be undone any more. */
  commit(): void {
    this.steps = []
  }

  /** Undoes every registered step, newest first; an undo that fails is logged and the rest still run. */
  async rollback(): Promise<void> {
    const steps = this.steps.reverse()
    this.steps = []
    for (const step of steps) {
      try {
        await step.undo()
      } catch (err) {
        this.log(`${this.operation}: undoing ${step.description} failed: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  }

  /**
   * Runs a part of the operation with its own stack: if the part fails, its steps are undone
   * (and the error goes on); if it succeeds, its undos join this stack, to run if a later step
   * of the operation fails.
   */
  async nest<T>(fn: (undo: UndoStack) => Promise<T>): Promise<T> {
    const inner = new UndoStack(this.operation, this.log)
    const result = await withStack(inner, fn)
    this.steps.push(...inner.steps)
    return result
  }
}

async function withStack<T>(stack: UndoStack, fn: (undo: UndoStack) => Promise<T>): Promise<T> {
  try {
    return await fn(stack)
  } catch (err) {
    await stack.rollback()
    throw err
  }
}

/**
 * Runs `fn` with a fresh undo stack: when `fn` fails, what its steps registered is undone and
 * its error rethrown as it was; when it succeeds, nothing is undone.
 */
export async function withUndo<T>(operation: string, fn: (undo: UndoStack) => Promise<T>, log?: UndoLog): Promise<T> {
  const stack = new UndoStack(operation, log)
  const result = await withStack(stack, fn)
  stack.commit()
  return result
}
