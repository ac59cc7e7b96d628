// Shared by the demo pages: the relay is this page's origin, tokens come from POST /demo/token.
export const relayUrl = location.origin

/** A demo token: {token, expires_at, chat?, user}. */
export async function fetchToken (request) {
  const response = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request)
  })
  if (!response.ok) throw new Error(`token refused: ${response.status}`)
  return await response.json()
}

export async function getJson (path) {
  const response = await fetch(path)
  if (!response.ok) throw new Error(`${path}: ${response.status}`)
  return await response.json()
}

/** An element with attributes and text or child nodes (never HTML: message text is the sender's). */
export function el (tag, attributes = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value))
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ''))
  return node
}

export function nameOf (user) {
  if (user === null || user === undefined) return 'System'
  return [user.firstname, user.lastname].filter(Boolean).join(' ') || `${user.role ?? 'user'} ${user.id}`
}

function timeOf (sendTime) {
  const date = new Date(sendTime ?? Date.now())
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
}

const statusMarks = { new: '✓', delivered: '✓✓', read: '✓✓ read' }

/** One message as a list item; `mine`: written by the viewer's side (right-aligned). */
export function messageItem (message, mine) {
  return el('li', { 'data-id': message.id, class: `message ${message.type} ${mine ? 'mine' : 'theirs'}` },
    el('span', { class: 'author' }, message.type === 'note' ? `Note · ${nameOf(message.user)}` : nameOf(message.user)),
    el('span', { class: 'text' }, message.text ?? ''),
    el('span', { class: 'meta' }, `${timeOf(message.send_time)} ${mine && message.type !== 'note' ? statusMarks[message.status] ?? '' : ''}`))
}

/** message_added: appended as it comes (the SDK drops duplicates; the page does not hide any). */
export function addMessage (list, message, mine) {
  list.append(messageItem(message, mine))
  list.scrollTop = list.scrollHeight
}

/** message_updated: replaces the message with its id, if shown. */
export function updateMessage (list, message, mine) {
  list.querySelector(`li[data-id="${CSS.escape(String(message.id))}"]`)?.replaceWith(messageItem(message, mine))
}

export function removeMessage (list, id) {
  list.querySelector(`li[data-id="${CSS.escape(String(id))}"]`)?.remove()
}

/** Connection state as a badge: connecting, connected, disconnected (with the close code). */
export function showState (badge, change) {
  badge.dataset.state = change.state
  badge.textContent = change.code === undefined ? change.state : `${change.state} (${change.code})`
}

/** A typing indicator that hides itself when updates stop coming (a lost `stopped`). */
export function typingIndicator (node, idleMs = 6000) {
  let timer
  return {
    show (text) {
      node.textContent = text
      node.hidden = false
      clearTimeout(timer)
      timer = setTimeout(() => { node.hidden = true }, idleMs)
    },
    hide () {
      clearTimeout(timer)
      node.hidden = true
    }
  }
}
