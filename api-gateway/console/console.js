// The agent console: a small page over the public API (REST under /v1.0 and the WebSocket),
// nothing the API does not offer to any client. Plain JavaScript, no build step.
'use strict';

const API = '/v1.0';
const PAGE = 30;
// Typing: a start is repeated while typing (it lapses after 10 s on the server's side) and a
// stop follows a pause.
const TYPING_REPEAT_MS = 3000;
const TYPING_PAUSE_MS = 4000;
const TYPING_SHOWN_MS = 10000;

const state = {
  token: null,
  me: null, // the agent's id
  rooms: new Map(), // chatroom id -> { room, unread }
  open: null, // the open chatroom
  olderToken: '', // the next (older) page of the open room
  loadingOlder: false,
  messages: new Map(), // copy id -> chatroommessage, open room
  peerReads: new Map(), // owner id -> read state, open room's chat
  names: new Map(), // agent id -> a name seen on its messages
  typing: new Map(), // chatroom id -> (agent id -> when its typing lapses)
  ws: null,
  typingSentAt: 0,
  typingStop: null,
  refreshes: new Map(), // chatroom id -> pending read-state refresh
};

const $ = (id) => document.getElementById(id);
const short = (id) => (id || '').slice(0, 8);

// --- The API ------------------------------------------------------------------------------

function agentOf(token) {
  const part = token.split('.')[1];
  if (!part) throw new Error('this is not a JWT');
  const claims = JSON.parse(atob(part.replace(/-/g, '+').replace(/_/g, '/')));
  const agent = typeof claims.agent === 'string' ? JSON.parse(claims.agent) : claims.agent;
  if (!agent || !agent.id) throw new Error('this token has no agent: sign in with an agent token');
  return agent;
}

async function call(method, path, body) {
  const res = await fetch(API + path, {
    method,
    headers: { Authorization: 'Bearer ' + state.token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((json.error && json.error.message) || res.status + ' ' + res.statusText);
  return json;
}

// --- Signing in and out ------------------------------------------------------------------

async function signIn(token) {
  state.token = token.trim();
  const agent = agentOf(state.token);
  state.me = agent.id;
  await loadRooms();
  sessionStorage.setItem('token', state.token);
  $('signin').hidden = true;
  $('console').hidden = false;
  $('me').textContent = (agent.name || 'agent') + ' (' + short(agent.id) + ')';
  connect();
}

function signOut() {
  sessionStorage.removeItem('token');
  location.reload();
}

// --- Chatrooms and their unread badges ----------------------------------------------------

async function loadRooms() {
  let token = '';
  const rooms = [];
  do {
    const page = await call('GET', '/service_agents/chatrooms?page_size=100&page_token=' + encodeURIComponent(token));
    rooms.push(...page.result);
    token = page.next_page_token;
  } while (token);
  const reads = await Promise.all(rooms.map((r) => call('GET', '/service_agents/chatrooms/' + r.id + '/read')));
  state.rooms = new Map(rooms.map((room, n) => [room.id, { room, unread: reads[n].unread_count }]));
  renderRooms();
}

function roomName(room) {
  const others = room.participant_ids.filter((p) => p !== state.me);
  return room.name || others.map((p) => state.names.get(p) || short(p)).join(', ') || 'chat ' + short(room.chat_id);
}

function renderRooms() {
  const list = $('room-list');
  list.replaceChildren();
  const entries = [...state.rooms.values()].sort((a, b) => roomName(a.room).localeCompare(roomName(b.room)));
  let total = 0;
  for (const { room, unread } of entries) {
    const li = document.createElement('li');
    li.dataset.room = room.id;
    li.className = state.open && state.open.id === room.id ? 'open' : '';
    const name = document.createElement('span');
    name.textContent = roomName(room);
    const hint = document.createElement('span');
    hint.className = 'typing-hint';
    hint.textContent = typingIn(room.id).length ? 'typing…' : '';
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = String(unread);
    badge.hidden = unread === 0;
    li.append(name, hint, badge);
    li.addEventListener('click', () => openRoom(room.id));
    list.append(li);
    total += unread;
  }
  $('total-unread').textContent = String(total);
}

// The exact count, from the server (a badge never drifts: it is never counted here).
function refreshRead(roomId) {
  if (state.refreshes.has(roomId)) return;
  state.refreshes.set(roomId, setTimeout(async () => {
    state.refreshes.delete(roomId);
    const entry = state.rooms.get(roomId);
    if (!entry) return;
    try {
      entry.unread = (await call('GET', '/service_agents/chatrooms/' + roomId + '/read')).unread_count;
      renderRooms();
    } catch (e) { /* the room went away: the chatroom events reload the list */ }
  }, 150));
}

async function markRead() {
  if (!state.open || document.visibilityState !== 'visible') return;
  const entry = state.rooms.get(state.open.id);
  if (!entry || entry.unread === 0) return;
  const read = await call('PUT', '/service_agents/chatrooms/' + state.open.id + '/read');
  entry.unread = read.unread_count;
  renderRooms();
}

// --- The open chatroom --------------------------------------------------------------------

async function openRoom(id) {
  const entry = state.rooms.get(id);
  if (!entry) return;
  stopTyping();
  state.open = entry.room;
  state.messages = new Map();
  state.peerReads = new Map();
  $('room-title').textContent = roomName(entry.room);
  $('messages').replaceChildren();
  $('compose').hidden = false;
  $('room-error').textContent = '';
  renderTyping();
  renderRooms();
  const page = await call('GET', '/service_agents/chatroommessages?page_size=' + PAGE + '&chatroom_id=' + id);
  if (!state.open || state.open.id !== id) return;
  state.olderToken = page.next_page_token;
  for (const m of page.result.reverse()) addMessage(m, 'end');
  scrollToBottom();
  const reads = await call('GET', '/service_agents/chatrooms/' + id + '/reads');
  for (const r of reads.result) if (r.owner_id !== state.me) state.peerReads.set(r.owner_id, r);
  renderSeen();
  await markRead();
  $('text').focus();
}

async function loadOlder() {
  if (!state.open || !state.olderToken || state.loadingOlder) return;
  state.loadingOlder = true;
  const id = state.open.id;
  try {
    const page = await call('GET', '/service_agents/chatroommessages?page_size=' + PAGE + '&chatroom_id=' + id +
      '&page_token=' + encodeURIComponent(state.olderToken));
    if (!state.open || state.open.id !== id) return;
    const list = $('messages');
    const before = list.scrollHeight;
    state.olderToken = page.next_page_token;
    for (const m of page.result) addMessage(m, 'start');
    list.scrollTop += list.scrollHeight - before; // keep what was in view where it was
    renderSeen();
  } finally {
    state.loadingOlder = false;
  }
}

function mine(m) {
  return m.source && m.source.type === 'agent' && m.source.target === state.me;
}

function addMessage(m, where) {
  if (m.source && m.source.type === 'agent' && m.source.target_name) state.names.set(m.source.target, m.source.target_name);
  const existing = document.querySelector('#messages li[data-id="' + m.id + '"]');
  state.messages.set(m.id, m);
  const li = existing || document.createElement('li');
  li.dataset.id = m.id;
  li.className = mine(m) ? 'mine' : 'theirs';
  li.replaceChildren();
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = mine(m) ? 'you' : (m.source.target_name || m.source.name || short(m.source.target));
  meta.textContent = who + ' · ' + m.tm_create.slice(11, 16) + (m.tm_update > m.tm_create ? ' · edited' : '');
  if (mine(m)) {
    const edit = document.createElement('button');
    edit.type = 'button';
    edit.className = 'link edit';
    edit.textContent = 'edit';
    edit.addEventListener('click', () => startEdit(li, m));
    meta.append(edit);
  }
  const bubble = document.createElement('div');
  bubble.className = 'bubble';
  bubble.textContent = m.text;
  li.append(meta, bubble);
  if (!existing) {
    if (where === 'start') $('messages').prepend(li);
    else $('messages').append(li);
  }
}

function startEdit(li, m) {
  const input = document.createElement('input');
  input.value = m.text;
  input.className = 'editing';
  li.querySelector('.bubble').replaceWith(input);
  input.focus();
  input.addEventListener('keydown', async (e) => {
    if (e.key === 'Escape') addMessage(m);
    if (e.key !== 'Enter') return;
    e.preventDefault();
    try {
      addMessage(await call('PUT', '/service_agents/chatroommessages/' + m.id, { text: input.value }));
      renderSeen();
    } catch (err) {
      $('room-error').textContent = err.message;
    }
  });
}

// "Seen" under the newest of my messages that another participant has read up to.
function renderSeen() {
  for (const el of document.querySelectorAll('#messages .seen')) el.remove();
  const own = [...state.messages.values()].filter(mine).sort((a, b) => (a.tm_create < b.tm_create ? 1 : -1));
  for (const m of own) {
    const seenBy = [...state.peerReads.values()].filter((r) => r.tm_last_read && r.tm_last_read >= m.tm_create);
    if (seenBy.length === 0) continue;
    const li = document.querySelector('#messages li[data-id="' + m.id + '"]');
    if (!li) return;
    const seen = document.createElement('div');
    seen.className = 'seen';
    seen.textContent = seenBy.length === 1 && state.peerReads.size === 1 ? 'Seen' : 'Seen by ' + seenBy.length;
    li.append(seen);
    return;
  }
}

function scrollToBottom() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

// --- Typing -------------------------------------------------------------------------------

function sendTyping(typingState) {
  if (!state.open || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: 'typing', chatroom_id: state.open.id, state: typingState }));
}

function typed() {
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_REPEAT_MS) {
    sendTyping('start');
    state.typingSentAt = now;
  }
  clearTimeout(state.typingStop);
  state.typingStop = setTimeout(stopTyping, TYPING_PAUSE_MS);
}

function stopTyping() {
  clearTimeout(state.typingStop);
  if (state.typingSentAt) sendTyping('stop');
  state.typingSentAt = 0;
}

// Who types in a chatroom now (a start lapses after 10 s without another).
function typingIn(roomId) {
  const now = Date.now();
  const agents = state.typing.get(roomId) || new Map();
  for (const [agent, until] of agents) if (until <= now) agents.delete(agent);
  return [...agents.keys()];
}

function setTyping(roomId, agent, typing) {
  if (!state.typing.has(roomId)) state.typing.set(roomId, new Map());
  if (typing) state.typing.get(roomId).set(agent, Date.now() + TYPING_SHOWN_MS);
  else state.typing.get(roomId).delete(agent);
}

function renderTyping() {
  const who = state.open ? typingIn(state.open.id).map((a) => state.names.get(a) || short(a)) : [];
  $('typing').textContent = who.length === 0 ? '' : who.join(', ') + (who.length === 1 ? ' is' : ' are') + ' typing…';
  for (const li of document.querySelectorAll('#room-list li')) {
    li.querySelector('.typing-hint').textContent = typingIn(li.dataset.room).length ? 'typing…' : '';
  }
}
setInterval(renderTyping, 1000);

// --- The WebSocket ------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(scheme + '//' + location.host + API + '/ws?token=' + encodeURIComponent(state.token));
  state.ws = ws;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: 'subscribe',
      topics: ['agent_id:' + state.me + ':chatroom', 'agent_id:' + state.me + ':messagechatroom'],
    }));
  };
  ws.onmessage = (e) => onFrame(JSON.parse(e.data));
  ws.onclose = () => {
    $('connection').textContent = 'reconnecting…';
    $('connection').className = 'connection';
    // What was missed while away: the rooms' counts and the open room again.
    setTimeout(async () => {
      connect();
      await loadRooms().catch(() => {});
      if (state.open) openRoom(state.open.id).catch(() => {});
    }, 1000);
  };
}

function onFrame(frame) {
  const data = frame.data;
  switch (frame.type) {
    case 'subscribed':
      $('connection').textContent = 'live';
      $('connection').className = 'connection live';
      break;
    case 'messagechatroom_created':
    case 'messagechatroom_updated':
    case 'messagechatroom_deleted':
      onCopy(frame.type, data);
      break;
    case 'chatroom_created':
    case 'chatroom_updated':
    case 'chatroom_deleted':
      loadRooms().catch(() => {});
      break;
    case 'chatroom_read_updated':
      onRead(data);
      break;
    case 'chatroom_typing':
      setTyping(data.chatroom_id, data.agent_id, data.state === 'start');
      renderTyping();
      break;
    case 'error':
      $('room-error').textContent = data ? data.message : frame.error.message;
      break;
  }
}

function onCopy(type, copy) {
  // A message sent ends its sender's typing.
  if (type === 'messagechatroom_created' && copy.source) setTyping(copy.chatroom_id, copy.source.target, false);
  renderTyping();
  if (state.open && copy.chatroom_id === state.open.id) {
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    if (type === 'messagechatroom_deleted') {
      state.messages.delete(copy.id);
      const li = document.querySelector('#messages li[data-id="' + copy.id + '"]');
      if (li) li.remove();
    } else {
      addMessage(copy, 'end');
      if (atBottom) scrollToBottom();
    }
    renderSeen();
    if (type === 'messagechatroom_created' && !mine(copy)) {
      const entry = state.rooms.get(copy.chatroom_id);
      if (entry) entry.unread += 1; // made exact by the read that follows
      markRead().catch((e) => { $('room-error').textContent = e.message; });
      return;
    }
  }
  refreshRead(copy.chatroom_id);
}

function onRead(read) {
  if (read.owner_id === state.me) {
    const entry = state.rooms.get(read.chatroom_id);
    if (entry) {
      entry.unread = read.unread_count;
      renderRooms();
    }
  } else if (state.open && read.chat_id === state.open.chat_id) {
    state.peerReads.set(read.owner_id, read);
    renderSeen();
  }
}

// --- Wiring -------------------------------------------------------------------------------

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('signin-error').textContent = '';
  try {
    await signIn($('token').value);
  } catch (err) {
    $('signin-error').textContent = err.message;
  }
});
$('signout').addEventListener('click', signOut);
$('messages').addEventListener('scroll', () => {
  if ($('messages').scrollTop < 40) loadOlder().catch((e) => { $('room-error').textContent = e.message; });
});
$('text').addEventListener('input', typed);
$('compose').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (!text.trim() || !state.open) return;
  stopTyping();
  try {
    const copy = await call('POST', '/service_agents/chatroommessages', { chatroom_id: state.open.id, text });
    $('text').value = '';
    addMessage(copy, 'end');
    scrollToBottom();
    renderSeen();
  } catch (err) {
    $('room-error').textContent = err.message;
  }
});
document.addEventListener('visibilitychange', () => markRead().catch(() => {}));

const saved = sessionStorage.getItem('token');
if (saved) signIn(saved).catch(() => sessionStorage.removeItem('token'));
