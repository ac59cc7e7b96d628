import t from 'tap'
import type { Connection } from '../src/socket/connection.js'
import { SocketIndex } from '../src/socket/socket-index.js'

// The index only stores and compares references: plain objects stand in for connections.
const socket = (name: string): Connection => ({ name }) as unknown as Connection

t.test('a key holds one socket as is, several in a Set, and falls back to one as they leave', async (t) => {
  const index = new SocketIndex()
  const [a, b, c] = [socket('a'), socket('b'), socket('c')]
  index.add('op-1', a)
  t.equal(index.get('op-1'), a, 'one socket is held directly')
  index.add('op-1', a)
  t.equal(index.size, 1, 'adding the same socket twice counts once')
  index.add('op-1', b)
  index.add('op-2', c)
  t.same([...(index.get('op-1') as Set<Connection>)], [a, b], 'two sockets under one key')
  t.equal(index.size, 3)
  t.same(new Set(index.values()), new Set([a, b, c]), 'values() walks every socket once')

  t.notOk(index.delete('op-2', a), 'a socket under another key is not deleted')
  t.notOk(index.delete('nobody', a), 'an unknown key deletes nothing')
  t.ok(index.delete('op-1', a))
  t.equal(index.get('op-1'), b, 'back to one socket held directly')
  t.notOk(index.delete('op-1', a), 'deleting twice is refused')
  t.ok(index.delete('op-1', b))
  t.equal(index.get('op-1'), undefined, 'the key goes with its last socket')
  t.equal(index.size, 1)
  t.same([...index.values()], [c])
})
