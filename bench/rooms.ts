import { chatUuid, type ClientSpec } from './workload.js'

/**
 * The routing table expressed as rooms, for the peers (Socket.IO, raw ws), which have no routing of their
 * own: a client joins rooms when it connects (named in the query), a message goes to the rooms its
 * fields name. The rooms a message names reach disjoint clients, so no peer needs to de-duplicate.
 */

export function clientRooms (client: ClientSpec): string[] {
  switch (client.kind) {
    case 'customer':
      return [`chat:${chatUuid(client.chat)}:user`]
    case 'operator':
      return [`chat:${chatUuid(client.chat)}:operator`]
    case 'console': {
      const { widgets, departments } = client
      if (widgets !== undefined && departments !== undefined) {
        return widgets.flatMap((widget) => departments.map((department) => `wd:${widget}:${department}`))
      }
      if (widgets !== undefined) return widgets.map((widget) => `w:${widget}`)
      if (departments !== undefined) return departments.map((department) => `d:${department}`)
      return ['all']
    }
  }
}

/** The fields of a posted message that routing reads. */
export interface RoutedMessage {
  type: string
  type_role?: string | null
  chat: { uuid: string, widget?: { source?: string }, department?: { id?: string | number } | null }
}

export function messageRooms (message: RoutedMessage): string[] {
  const chat = `chat:${message.chat.uuid}`
  switch (message.type) {
    case 'standard':
    case 'bot': {
      const widget = message.chat.widget?.source
      const department = message.chat.department?.id
      return [`${chat}:user`, `${chat}:operator`, 'all', `w:${String(widget)}`, `d:${String(department)}`, `wd:${String(widget)}:${String(department)}`]
    }
    case 'system':
      return [`${chat}:${String(message.type_role)}`]
    case 'note':
      return [`${chat}:operator`]
    default:
      return []
  }
}
