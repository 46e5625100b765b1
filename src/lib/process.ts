// Small process helpers shared by the daemon's supervisors and the agent.

/** Whether a process with this PID exists (signal 0 probes without touching it). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
