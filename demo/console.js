// The operator console: one /broadcast socket for the chat list, one /chat socket for the open chat.
import { connectChat, connectConsole } from './sdk/index.js'
import { addMessage, el, fetchToken, getJson, nameOf, relayUrl, removeMessage, showState, typingIndicator, updateMessage } from './common.js'

const params = new URLSearchParams(location.search)
const $ = (id) => document.getElementById(id)
const operator = params.get('operator') ?? sessionStorage.getItem('demo.operator') ?? String(100 + Math.floor(Math.random() * 900))
sessionStorage.setItem('demo.operator', operator)
const widgets = params.get('widgets')?.split(',').filter(Boolean)
const sources = widgets === undefined ? undefined : { widgets }
$('me').textContent = `Operator ${operator}`

/** chat uuid → {chat, item}: the list grouped by widget. */
const chats = new Map()
function chatEntry (chat) {
  let entry = chats.get(chat.uuid)
  if (entry === undefined) {
    const widget = chat.widget?.source ?? 'no widget'
    let group = document.querySelector(`section[data-widget="${CSS.escape(widget)}"] ul`)
    if (group === null) {
      $('chats').querySelector('.empty')?.remove()
      const section = el('section', { 'data-widget': widget, class: 'widget-group' }, el('h3', {}, widget), el('ul'))
      $('chats').append(section)
      group = section.querySelector('ul')
    }
    const item = el('li', { 'data-chat': chat.uuid, class: 'chat-item' },
      el('span', { class: 'presence' }), el('span', { class: 'name' }, nameOf(chat.owner_user ?? null)),
      el('span', { class: 'last' }), el('span', { class: 'draft' }))
    item.addEventListener('click', () => openChat(chat.uuid))
    group.prepend(item)
    entry = { chat, item }
    chats.set(chat.uuid, entry)
  }
  if (chat.owner_user) entry.item.querySelector('.name').textContent = nameOf(chat.owner_user)
  return entry
}
const setText = (entry, field, text) => { entry.item.querySelector(field).textContent = text }

const consoleClient = connectConsole({ url: relayUrl, getToken: async () => (await fetchToken({ role: 'operator', sub: operator, ...(sources ? { sources } : {}) })).token })
consoleClient.on('state', (change) => showState($('state'), change))
consoleClient.on('chat_updated', ({ chat }) => chatEntry(chat))
consoleClient.on('message_added', ({ message }) => {
  const entry = chatEntry(message.chat)
  setText(entry, '.last', `${nameOf(message.user)}: ${message.text ?? ''}`)
  if (message.user?.role === 'user') setText(entry, '.draft', '')
  if (message.chat.uuid !== openUuid) entry.item.classList.add('unread')
})
// A customer's typing reaches consoles with the draft: shown under the chat in the list.
consoleClient.on('typing_updated', ({ chat, user, text, stopped }) => {
  if (user.role === 'operator') return
  setText(chatEntry(chat), '.draft', stopped ? '' : `typing: ${text ?? ''}`)
})
consoleClient.on('customer_presence', ({ chat, online }) => chatEntry(chat).item.classList.toggle('online', online))
consoleClient.on('resync', () => { void loadChats() })

async function loadChats () {
  for (const chat of await getJson('/demo/chats')) chatEntry(chat)
}
async function loadOperators () {
  const online = await getJson('/demo/online-users')
  $('operators').replaceChildren(...online.map(({ user, sessions }) => el('li', { 'data-operator': user.id }, `${nameOf(user)} (${sessions})`)))
}
void loadChats()
void loadOperators()
setInterval(() => { void loadOperators().catch(() => {}) }, 5000)
consoleClient.on('connected', () => { void loadOperators().catch(() => {}) })

// The open chat: its own /chat socket with history; the token is kept for posting notes.
let openUuid = null
let chatClient = null
let chatToken = null
const list = $('conversation')
const typing = typingIndicator($('typing'))
const notice = (text) => { $('notice').textContent = text; $('notice').hidden = text === '' }
const mine = (message) => message.user?.role === 'operator' && String(message.user.id) === operator

function openChat (uuid) {
  if (uuid === openUuid) return
  chatClient?.close()
  openUuid = uuid
  const entry = chats.get(uuid)
  entry.item.classList.remove('unread')
  for (const selected of document.querySelectorAll('.chat-item.selected')) selected.classList.remove('selected')
  entry.item.classList.add('selected')
  $('chat-title').textContent = `${nameOf(entry.chat.owner_user ?? null)} · ${entry.chat.widget?.source ?? ''}`
  list.replaceChildren()
  typing.hide()
  notice('')
  for (const input of document.querySelectorAll('form input, form button')) input.disabled = false
  const client = chatClient = connectChat({
    url: relayUrl,
    history: 50,
    getToken: async () => (chatToken = (await fetchToken({ role: 'operator', sub: operator, chat: uuid })).token)
  })
  $('chat-state').hidden = false
  client.on('state', (change) => showState($('chat-state'), change))
  client.on('resync', () => { if (list.children.length > 0) notice('Reconnected: earlier messages may be missing.') })
  client.on('message_added', ({ message }) => addMessage(list, message, mine(message)))
  client.on('message_updated', ({ message }) => updateMessage(list, message, mine(message)))
  client.on('message_deleted', ({ message }) => removeMessage(list, message.id))
  client.on('typing_updated', ({ user, text, stopped }) => {
    if (user.role === 'operator' && String(user.id) === operator) return
    if (stopped) typing.hide()
    else typing.show(`${nameOf(user)} is typing: ${text ?? ''}`)
  })
  client.on('message_not_added', ({ reason }) => notice(`Not sent: ${reason}`))
}

$('text').addEventListener('input', (event) => chatClient?.typing(event.target.value))
$('send').addEventListener('submit', (event) => {
  event.preventDefault()
  const text = $('text').value.trim()
  if (text === '' || chatClient === null) return
  $('text').value = ''
  chatClient.sendMessage(text).catch((error) => notice(`Not sent: ${error.reason ?? error.message}`))
})
// Notes are posted the way a backend would (POST /message with type note); the relay shows them to operators only.
$('note').addEventListener('submit', async (event) => {
  event.preventDefault()
  const text = $('note-text').value.trim()
  if (text === '' || chatToken === null) return
  $('note-text').value = ''
  const response = await fetch('/demo/note', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${chatToken}` },
    body: JSON.stringify({ text })
  })
  if (!response.ok) notice(`Note not added: ${response.status}`)
})
