// The customer's widget: one /chat socket through the SDK. It never sees notes, nor an operator's draft.
import { connectChat } from './sdk/index.js'
import { addMessage, fetchToken, relayUrl, removeMessage, showState, typingIndicator, updateMessage } from './common.js'

const params = new URLSearchParams(location.search)
const widget = params.get('widget') ?? 'lk'
const $ = (id) => document.getElementById(id)
const list = $('messages')
const typing = typingIndicator($('typing'))
const notice = (text) => { $('notice').textContent = text; $('notice').hidden = false }

// The first token opens (and announces) a chat on this widget; later ones (reconnects, 4401) reuse it.
const saved = JSON.parse(sessionStorage.getItem(`demo.widget.${widget}`) ?? 'null')
let me = saved
async function getToken () {
  const request = me === null
    ? { role: 'user', widget, ...(params.has('name') ? { name: params.get('name') } : {}) }
    : { role: 'user', chat: me.chat, sub: String(me.user.id), name: me.user.firstname }
  const answer = await fetchToken(request)
  if (me === null) {
    me = { chat: answer.chat, user: answer.user }
    sessionStorage.setItem(`demo.widget.${widget}`, JSON.stringify(me))
  }
  $('chat-id').textContent = `chat ${me.chat} · ${widget}`
  $('chat-id').dataset.chat = me.chat
  return answer.token
}
const mine = (message) => message.user?.role === 'user' && String(message.user.id) === String(me?.user.id)

const chat = connectChat({ url: relayUrl, getToken, history: 50 })
chat.on('state', (change) => showState($('state'), change))
chat.on('recovered', () => notice('Reconnected: nothing was missed.'))
chat.on('resync', () => { if (list.children.length > 0) notice('Reconnected: earlier messages may be missing.') })
chat.on('message_added', ({ message }) => {
  addMessage(list, message, mine(message))
  if (!mine(message) && message.status !== 'read' && document.visibilityState === 'visible') chat.markRead(message.id)
})
chat.on('message_updated', ({ message }) => updateMessage(list, message, mine(message)))
chat.on('message_deleted', ({ message }) => removeMessage(list, message.id))
// The relay sends an operator's typing to customers without text: only that someone is typing.
chat.on('typing_updated', ({ stopped }) => stopped ? typing.hide() : typing.show('Operator is typing…'))
chat.on('message_not_added', ({ reason }) => notice(`Not sent: ${reason}`))
chat.on('error', ({ code }) => notice(`Error: ${code}`))

$('text').addEventListener('input', (event) => chat.typing(event.target.value))
$('send').addEventListener('submit', (event) => {
  event.preventDefault()
  const text = $('text').value.trim()
  if (text === '') return
  $('text').value = ''
  chat.sendMessage(text).catch((error) => notice(`Not sent: ${error.reason ?? error.message}`))
})
