// A disk image's two block nodes in a running QEMU, named as the command line names them
// (argv.ts): the protocol node that reaches the file and the format node the device uses.
import { fileNodeName } from './argv.js'
import type { QemuDisk } from './config.js'
import { protocolNode } from './protocol.js'
import type { QmpClient } from './qmp.js'
import type { UndoStack } from '../lib/undo.js'

/** The file and format nodes of an image, each with its undo on `undo`. */
export async function addBlockNodes(qmp: QmpClient, undo: UndoStack, node: string, path: string, format: QemuDisk['format'], readOnly: boolean): Promise<void> {
  const file = fileNodeName({ node })
  const del = (name: string) => () => qmp.execute('blockdev-del', { 'node-name': name })
  const { where, tuning } = protocolNode(path)
  await undo.step(`block node ${file}`, () => qmp.execute('blockdev-add', { ...where, 'node-name': file, 'read-only': readOnly, ...tuning, ...(readOnly ? {} : { discard: 'unmap' }) }), del(file))
  await undo.step(`block node ${node}`, () => qmp.execute('blockdev-add', { driver: format, 'node-name': node, file, 'read-only': readOnly, ...(readOnly ? {} : { discard: 'unmap', 'detect-zeroes': 'unmap' }) }), del(node))
}

/** Deletes an image's format and file nodes, whichever are still there. */
export async function removeBlockNodes(qmp: QmpClient, node: string): Promise<void> {
  await qmp.execute('blockdev-del', { 'node-name': node }).catch(() => undefined)
  await qmp.execute('blockdev-del', { 'node-name': fileNodeName({ node }) }).catch(() => undefined)
}
