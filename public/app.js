// @ts-check
/// <reference lib="dom" />
/**
 * natter's page: one WebSocket speaking natter.v1, a log, a member list, a status line,
 * and reconnection with backoff. User text only ever reaches the DOM as textContent.
 */

const PROTOCOL = "natter.v1";
const MAX_LOG_ITEMS = 1000;
const NAME_KEY = "natter.name";
const TOKEN_KEY = "natter.token";
const TOKEN_PROTOCOL_PREFIX = "natter.token.";
const COMMANDS = "Commands: /nick NAME, /join ROOM, /who, /rooms, /me ACTION, /history [N], " +
  "/msg NAME TEXT, /topic [TEXT], /help, /quit; // sends a line starting with /. " +
  "Moderators: /kick NAME, /mute NAME [10m], /unmute NAME, /delete ID; admins: /ban, /unban.";

/**
 * @typedef {{ type: "message", room: string, id: number, ts: number, from: string, text: string, action?: true, deleted?: true, ref?: string | number }} MessageEvent
 * @typedef {{ type: "welcome", name: string, room: string, members: string[], count?: number, epoch?: string, history?: MessageEvent[], recovered?: boolean, topic?: string, role?: "moderator" | "admin", ref?: string | number }
 *   | MessageEvent
 *   | { type: "history", room: string, messages: MessageEvent[], more: boolean, ref?: string | number }
 *   | { type: "typing", room: string, name: string, ts: number }
 *   | { type: "presence", room: string, joined: string[], left: string[], joinedCount: number, leftCount: number, count: number, ts: number }
 *   | { type: "rooms", rooms: { room: string, members: number }[], ref?: string | number }
 *   | { type: "joined" | "left", room: string, name: string, ts: number }
 *   | { type: "renamed", room: string, from: string, to: string, ts: number, ref?: string | number }
 *   | { type: "members", room: string, members: string[], ref?: string | number }
 *   | { type: "error", code: string, message: string, ref?: string | number }
 *   | { type: "unknown", message: string, ref?: string | number, key?: string }
 *   | { type: "notice", text: string }
 *   | { type: "topic", room: string, topic: string, by?: string, ts: number }
 *   | { type: "moderated", room: string, action: "kick" | "mute" | "unmute" | "ban" | "unban", name: string, by: string, reason?: string, until?: number, ts: number }
 *   | { type: "deleted", room: string, id: number, by: string, ts: number }
 *   | { type: "private", from: string, to: string, text: string, ts: number }} ServerEvent
 */

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} type
 * @returns {T}
 */
function byId(id, type) {
  const element = document.getElementById(id);
  if (!(element instanceof type)) throw new Error(`page is missing #${id}`);
  return element;
}

/** localStorage that degrades to nothing where storage is blocked, instead of breaking the page. */
const store = {
  /** @param {string} key */
  get(key) {
    try {
      return localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  /** @param {string} key @param {string} value */
  set(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      // not remembered, but the chat goes on
    }
  },
};

const ui = {
  log: byId("log", HTMLOListElement),
  conversation: byId("conversation", HTMLElement),
  members: byId("members", HTMLUListElement),
  topic: byId("topic", HTMLParagraphElement),
  count: byId("count", HTMLSpanElement),
  status: byId("status", HTMLParagraphElement),
  statusText: byId("status-text", HTMLSpanElement),
  retry: byId("retry", HTMLButtonElement),
  identity: byId("identity", HTMLFormElement),
  name: byId("name", HTMLInputElement),
  room: byId("room", HTMLInputElement),
  compose: byId("compose", HTMLFormElement),
  auth: byId("auth", HTMLFormElement),
  token: byId("token", HTMLInputElement),
  text: byId("text", HTMLInputElement),
  older: byId("older", HTMLButtonElement),
  typing: byId("typing", HTMLParagraphElement),
};

/**
 * A `?token=` in the page's address (a link someone was given, e.g. with a signed token): taken,
 * remembered like a typed one, and removed from the address bar, where it would be bookmarked,
 * shared or shown on screen.
 * @returns {string | undefined}
 */
function tokenFromAddress() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  if (token === null) return undefined;
  url.searchParams.delete("token");
  history.replaceState(null, "", url);
  store.set(TOKEN_KEY, token);
  return token;
}

const state = {
  /** @type {WebSocket | null} */
  socket: null,
  /** The name the server gave us (it may carry a suffix where ours was taken). */
  name: "",
  /**
   * The name we ask for on every (re)connect: the one the person chose, or the one a link gives
   * (`?name=`, as a REPL's URL does), which wins over the remembered one.
   */
  wanted: new URLSearchParams(location.search).get("name") ?? store.get(NAME_KEY) ?? "",
  /** The room we ask for; empty until the welcome names it (the server knows its default). */
  room: new URLSearchParams(location.search).get("room") ?? "",
  /** The room of the last welcome: the one the log shows. */
  joined: "",
  /** @type {string[]} */
  members: [],
  attempt: 0,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  timer: undefined,
  /** Messages sent and not yet acknowledged, by ref. @type {Map<string, HTMLLIElement>} */
  pending: new Map(),
  /** True while a welcome's exact recovery is shown (see unconfirmed()). */
  recovering: false,
  nextRef: 1,
  everConnected: false,
  /** The id space of the messages shown; a new one means ids start over. */
  epoch: "",
  /** Ids of the messages shown in this room, so that nothing shows twice. */
  shown: new Set(),
  /** The newest message id shown: where a reconnect resumes (`since`). */
  lastId: 0,
  /** Who is typing, and until when (ms). @type {Map<string, number>} */
  typing: new Map(),
  typingSentAt: 0,
  /** Members in the room; in a big room more than `members` lists. */
  count: 0,
  token: tokenFromAddress() ?? store.get(TOKEN_KEY) ?? "",
  tokenRequired: false,
  /** What our signed token lets us do: "" (a member), "moderator" or "admin". */
  role: "",
  /** The room's topic. */
  topic: "",
};

/** Whether our token lets us moderate (delete, mute, remove). */
function moderator() {
  return state.role === "moderator" || state.role === "admin";
}

// ---- rendering -------------------------------------------------------------------------

/** @param {number} ts */
function timeOf(ts) {
  const time = document.createElement("time");
  const date = new Date(ts);
  time.dateTime = date.toISOString();
  time.title = date.toLocaleString();
  time.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return time;
}

/** @param {HTMLLIElement} item */
function append(item) {
  const view = ui.conversation;
  const atBottom = view.scrollHeight - view.scrollTop - view.clientHeight < 40;
  ui.log.append(item);
  while (ui.log.childElementCount > MAX_LOG_ITEMS) ui.log.firstElementChild?.remove();
  if (atBottom) view.scrollTop = view.scrollHeight;
}

/**
 * @param {string} text
 * @param {"notice" | "error"} kind
 * @param {number} [ts]
 */
function note(text, kind = "notice", ts = Date.now()) {
  const item = document.createElement("li");
  item.className = kind;
  const body = document.createElement("span");
  body.className = "text";
  body.dir = "auto";
  body.textContent = text;
  item.append(timeOf(ts), body);
  append(item);
}

/**
 * Fills a message item: time, author, text — all as text nodes.
 * @param {HTMLLIElement} item
 * @param {{ from: string, text: string, ts: number, action?: boolean, deleted?: boolean, id?: number }} message
 */
function fillMessage(item, message) {
  const from = document.createElement("span");
  from.className = "from";
  from.dir = "auto";
  from.textContent = message.from;
  const text = document.createElement("span");
  text.className = "text";
  text.dir = "auto";
  if (message.deleted) text.textContent = "message deleted";
  else text.replaceChildren(...linked(message.text));
  item.classList.toggle("action", Boolean(message.action));
  item.classList.toggle("deleted", Boolean(message.deleted));
  item.classList.toggle("mine", message.from === state.name);
  item.replaceChildren(timeOf(message.ts), from, text);
  item.dataset.ts = String(message.ts);
  if (moderator() && message.id !== undefined && !message.deleted) {
    const id = message.id;
    item.append(
      tool(
        "Delete",
        `Delete this message by ${message.from}`,
        () => send({ type: "delete", id, ref: String(state.nextRef++) }),
      ),
    );
  }
}

/**
 * A moderator's small button.
 * @param {string} label
 * @param {string} title
 * @param {() => unknown} action
 */
function tool(label, title, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "tool";
  button.textContent = label;
  button.title = title;
  button.addEventListener("click", () => void action());
  return button;
}

/** A message shown as deleted (a moderator removed it). @param {number} id */
function markDeleted(id) {
  const item = ui.log.querySelector(`li[data-id="${id}"]`);
  if (!(item instanceof HTMLLIElement)) return;
  const from = item.querySelector(".from")?.textContent ?? "";
  fillMessage(item, { from, text: "", ts: Number(item.dataset.ts ?? Date.now()), deleted: true });
}

/** A private message, to us or from us. @param {Extract<ServerEvent, { type: "private" }>} event */
function showPrivate(event) {
  const item = document.createElement("li");
  item.className = "private";
  const from = document.createElement("span");
  from.className = "from";
  from.dir = "auto";
  from.textContent = event.from === state.name ? `to ${event.to}` : `from ${event.from}`;
  const text = document.createElement("span");
  text.className = "text";
  text.dir = "auto";
  text.replaceChildren(...linked(event.text));
  item.append(timeOf(event.ts), from, text);
  item.title = "private: only the two of you see this";
  append(item);
}

function renderTopic() {
  ui.topic.hidden = state.topic === "";
  ui.topic.textContent = state.topic;
  ui.topic.title = state.topic === "" ? "" : `Topic of #${state.joined}`;
}

/** What a moderator did, in words. @param {Extract<ServerEvent, { type: "moderated" }>} event */
function moderation(event) {
  const verb = {
    kick: "removed",
    mute: "muted",
    unmute: "unmuted",
    ban: "banned",
    unban: "unbanned",
  }[event.action];
  const until = event.until ? ` until ${new Date(event.until).toLocaleTimeString()}` : "";
  const why = event.reason ? `: ${event.reason}` : "";
  return `${event.by} ${verb} ${event.name}${until}${why}`;
}

/**
 * An address without the punctuation that ends the sentence around it: a closing bracket stays
 * when the address opened one (`https://en.wikipedia.org/wiki/Deno_(software)`).
 * @param {string} address
 */
function trimmed(address) {
  let end = address.length;
  for (;;) {
    const last = address[end - 1];
    if (last === undefined) break;
    if (".,;:!?'\"".includes(last)) {
      end--;
      continue;
    }
    const open = last === ")" ? "(" : last === "]" ? "[" : undefined;
    if (!open) break;
    const body = address.slice(0, end);
    if (body.split(open).length > body.split(last).length - 1) break; // balanced: keep it
    end--;
  }
  return address.slice(0, end);
}

/** Web addresses in a message: http and https only. */
const LINK = /\bhttps?:\/\/[^\s<>"']+/gi;

/**
 * A message's text as nodes, with its web addresses as links: elements and text nodes, never
 * HTML, so nothing a message says can become markup. Trailing punctuation stays outside a link.
 * @param {string} text
 * @returns {Node[]}
 */
function linked(text) {
  /** @type {Node[]} */
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(LINK)) {
    const address = trimmed(match[0]);
    let url;
    try {
      url = new URL(address);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    const start = match.index ?? 0;
    if (start > at) nodes.push(document.createTextNode(text.slice(at, start)));
    const link = document.createElement("a");
    link.href = url.href;
    link.textContent = address;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    nodes.push(link);
    at = start + address.length;
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

/** @param {Extract<ServerEvent, { type: "message" }>} event */
function showMessage(event) {
  const key = event.ref === undefined ? undefined : String(event.ref);
  const mine = key === undefined ? unconfirmed(event) : state.pending.get(key);
  if (key !== undefined) state.pending.delete(key);
  stopTyping(event.from);
  if (state.shown.has(event.id)) return mine?.remove();
  const item = mine ?? document.createElement("li");
  item.classList.remove("pending", "unsure");
  item.dataset.id = String(event.id);
  fillMessage(item, event);
  remember(event);
  if (!item.isConnected) append(item);
}

/**
 * A message of ours that went out just before a connection dropped comes back through
 * recovery without its ref: match it by author and text to the item still waiting for it.
 * @param {MessageEvent} event
 */
function unconfirmed(event) {
  // Only in a welcome's exact recovery (what came after the last id seen): anywhere else an
  // older message with the same text would take the place of one still waiting.
  if (!state.recovering || event.from !== state.name) return undefined;
  for (const [ref, item] of state.pending) {
    if (item.dataset.text === event.text) {
      state.pending.delete(ref);
      return item;
    }
  }
  return undefined;
}

/** @param {MessageEvent} event */
function remember(event) {
  state.shown.add(event.id);
  state.lastId = Math.max(state.lastId, event.id);
}

/** Older messages from a `history` reply, put above what is shown. @param {MessageEvent[]} messages */
function prependHistory(messages) {
  const view = ui.conversation;
  const fromBottom = view.scrollHeight - view.scrollTop;
  const items = messages.filter((m) => !state.shown.has(m.id)).map((message) => {
    const item = document.createElement("li");
    item.dataset.id = String(message.id);
    fillMessage(item, message);
    remember(message);
    return item;
  });
  ui.log.prepend(...items);
  view.scrollTop = view.scrollHeight - fromBottom;
}

/** Keeps what is shown but forgets its ids: they belong to the server's previous id space. */
function forgetIds() {
  for (const item of ui.log.querySelectorAll("li[data-id]")) {
    if (item instanceof HTMLElement) {
      delete item.dataset.id;
      item.classList.add("before");
    }
  }
  state.shown.clear();
  state.lastId = 0;
}

function clearLog() {
  ui.log.replaceChildren();
  state.shown.clear();
  state.lastId = 0;
  state.typing.clear();
  renderTyping();
}

function oldestShown() {
  let oldest = Infinity;
  for (const id of state.shown) oldest = Math.min(oldest, id);
  return oldest;
}

function renderTyping() {
  const now = Date.now();
  for (const [name, until] of state.typing) if (until <= now) state.typing.delete(name);
  const names = [...state.typing.keys()];
  ui.typing.textContent = names.length === 0
    ? ""
    : names.length === 1
    ? `${names[0]} is typing…`
    : names.length <= 3
    ? `${names.join(", ")} are typing…`
    : "Several people are typing…";
}

/** @param {string} name */
function stopTyping(name) {
  if (state.typing.delete(name)) renderTyping();
}

setInterval(renderTyping, 1000);

function renderMembers() {
  const online = state.socket?.readyState === WebSocket.OPEN;
  ui.count.textContent = online ? `(${Math.max(state.count, state.members.length)})` : "(offline)";
  ui.members.replaceChildren(...state.members.map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    item.dataset.name = name;
    if (name === state.name) {
      item.className = "me";
      item.title = "you";
    } else if (moderator()) {
      // Text first, then the tools: the item reads as the name, its tools beside it.
      const tools = document.createElement("span");
      tools.className = "tools";
      const ref = () => String(state.nextRef++);
      tools.append(
        tool(
          "Mute",
          `Mute ${name} for 10 minutes`,
          () => send({ type: "mute", name, duration: "10m", ref: ref() }),
        ),
        tool(
          "Remove",
          `Remove ${name} from the room`,
          () => send({ type: "kick", name, ref: ref() }),
        ),
      );
      if (state.role === "admin") {
        tools.append(
          tool(
            "Ban",
            `Ban ${name} for a day`,
            () => send({ type: "ban", name, duration: "1d", ref: ref() }),
          ),
        );
      }
      item.append(tools);
    }
    return item;
  }));
}

/**
 * @param {"connecting" | "online" | "offline" | "closed"} kind
 * @param {string} text
 */
function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.statusText.textContent = text;
  ui.retry.hidden = kind === "online" || kind === "connecting";
}

function showIdentity() {
  ui.name.value = state.name;
  ui.room.value = state.room;
  if (!state.room) return;
  // On a phone the hint would be cut off: the room alone; /help lists the commands anyway.
  const narrow = matchMedia("(max-width: 640px)").matches;
  ui.text.placeholder = narrow
    ? `Message #${state.room}`
    : `Message #${state.room} (/help for commands)`;
  document.title = `#${state.room} · natter`;
  const url = new URL(location.href);
  if (url.searchParams.get("room") !== state.room) {
    url.searchParams.set("room", state.room);
    history.replaceState(null, "", url);
  }
}

// ---- the connection --------------------------------------------------------------------

/**
 * This tab's session: random, kept across reloads of the tab (sessionStorage), so that a reload
 * or a brief drop is not announced to the room as a leave and a join (the server's grace).
 */
const SESSION = (() => {
  try {
    const kept = sessionStorage.getItem("natter.session");
    if (kept) return kept;
    const made = crypto.randomUUID();
    sessionStorage.setItem("natter.session", made);
    return made;
  } catch {
    return crypto.randomUUID();
  }
})();

function socketUrl() {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("session", SESSION);
  if (state.room) url.searchParams.set("room", state.room);
  // Coming back to the room we were in: ask for exactly what we missed.
  if (state.lastId > 0 && state.room === state.joined) {
    url.searchParams.set("since", String(state.lastId));
    url.searchParams.set("epoch", state.epoch);
  }
  const name = state.wanted || state.name;
  if (name) url.searchParams.set("name", name);
  return url;
}

/**
 * Asks the server whether it needs a token and takes ours. A browser cannot see why an
 * upgrade failed, so the page asks `/auth` first, and again when a connection is refused.
 * @returns {Promise<{ required: boolean, accepted: boolean } | undefined>} undefined when unreachable
 */
async function checkToken() {
  try {
    /** @type {Record<string, string>} */
    const headers = state.token ? { authorization: `Bearer ${state.token}` } : {};
    const response = await fetch("/auth", { headers, cache: "no-store" });
    return await response.json();
  } catch {
    return undefined;
  }
}

function askForToken() {
  clearTimeout(state.timer);
  setStatus("closed", state.token ? "The token was not accepted." : "A token is needed.");
  ui.retry.hidden = true;
  ui.auth.hidden = false;
  ui.token.focus();
}

function connect() {
  clearTimeout(state.timer);
  if (state.socket) return;
  setStatus("connecting", state.everConnected ? "Reconnecting…" : "Connecting…");
  const protocols = state.token ? [PROTOCOL, TOKEN_PROTOCOL_PREFIX + state.token] : [PROTOCOL];
  const socket = new WebSocket(socketUrl(), protocols);
  state.socket = socket;
  let opened = false;
  socket.onopen = () => {
    opened = true;
  };
  socket.onmessage = (event) => {
    for (const line of String(event.data).split("\n")) {
      if (line === "") continue;
      try {
        handle(/** @type {ServerEvent} */ (JSON.parse(line)));
      } catch (error) {
        console.warn("natter: could not handle", line, error);
      }
    }
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    // Who is here is unknown while away: the list says so rather than show the last one.
    state.members = [];
    state.count = 0;
    state.typing.clear();
    renderTyping();
    renderMembers();
    // Pending messages wait for the next welcome: recovery may show they did arrive.
    if (event.code === 1000) {
      setStatus("closed", "Disconnected.");
      return;
    }
    if (event.code === 4004) {
      // Removed or banned by a moderator: no reconnecting by itself.
      note(event.reason || "A moderator removed you.", "error");
      setStatus("closed", "Removed by a moderator.");
      return;
    }
    if (event.code === 4003) {
      note("Your sign-in expired: enter a new token.", "error");
      return askForToken();
    }
    if (!opened && state.tokenRequired) {
      // Refused before it opened: maybe the token changed, maybe the server is away. Ask which.
      checkToken().then((auth) => auth && !auth.accepted ? askForToken() : retryLater());
      return;
    }
    retryLater();
  };
}

/** Schedules the next connection attempt with exponential backoff and jitter. */
function retryLater() {
  const delay = Math.min(15000, 500 * 2 ** state.attempt) * (0.75 + Math.random() / 2);
  state.attempt += 1;
  state.timer = setTimeout(connect, delay);
  setStatus("offline", `Offline — reconnecting in ${Math.ceil(delay / 1000)} s`);
}

/** @param {ServerEvent} event */
function handle(event) {
  switch (event.type) {
    case "welcome": {
      const moved = state.everConnected && event.room !== state.joined;
      const restarted = Boolean(state.epoch && event.epoch && event.epoch !== state.epoch);
      if (restarted && !moved) {
        // A server that restarted without its history (in memory): what is shown stays, set
        // apart, and nothing claims messages were lost that nobody may have sent.
        forgetIds();
        note("The server restarted; the messages above are from before and are not kept there.");
      } else if (moved || event.recovered === false) clearLog();
      if (event.recovered === false && !moved && !restarted) {
        note("Some messages from while you were away are no longer kept; here are the latest.");
      }
      state.epoch = event.epoch ?? "";
      // Before the history is shown: its messages from us are marked as ours by this name, and
      // a moderator's get their tools.
      state.name = event.name;
      state.role = event.role ?? "";
      state.topic = event.topic ?? "";
      const history = event.history ?? [];
      state.recovering = event.recovered === true;
      history.forEach(showMessage);
      state.recovering = false;
      // What recovery did not bring back: sent again with its key after a reconnect, paced
      // within the rate limit (the server keeps each key for 10 minutes, so one it did store
      // is not shown twice); failed after a move to another room, or once its key has expired.
      let resends = 0;
      for (const [ref, item] of state.pending) {
        const age = Date.now() - Number(item.dataset.sent);
        if (moved || !item.dataset.key || !(age < KEY_WINDOW_MS)) {
          item.classList.replace("pending", "failed");
          state.pending.delete(ref);
          continue;
        }
        if (!item.isConnected) append(item); // the log was cleared: it stays in view
        const message = {
          type: item.dataset.action ? "me" : "say",
          text: item.dataset.text,
          ref,
          key: item.dataset.key,
        };
        const socket = state.socket;
        setTimeout(() => {
          if (state.socket === socket && state.pending.get(ref) === item) send(message);
        }, 250 * resends++);
      }
      // Earlier messages may exist only if the room's history reaches back past what came.
      ui.older.hidden = history.length === 0 || (history[0]?.id ?? 1) <= 1;
      if (event.ref !== undefined && !moved) note(`You are already in #${event.room}.`);
      else if (state.everConnected && !moved) note(`Reconnected as ${event.name}.`);
      else note(`You are ${event.name} in #${event.room}.`);
      if (state.wanted && event.name === state.wanted) store.set(NAME_KEY, event.name);
      state.room = state.joined = event.room;
      state.name = event.name;
      state.members = event.members;
      state.count = event.count ?? event.members.length;
      // A big room's welcome lists only the first names: make sure we see ourselves.
      if (!state.members.includes(event.name)) state.members = [...state.members, event.name];
      state.attempt = 0;
      state.everConnected = true;
      setStatus("online", "Connected");
      showIdentity();
      renderMembers();
      renderTopic();
      return;
    }
    case "message":
      // An acknowledgement can arrive for the room we just left: it is not this room's.
      if (event.room !== state.joined) return;
      return showMessage(event);
    case "history":
      prependHistory(event.messages);
      ui.older.hidden = !event.more;
      ui.older.disabled = false;
      if (event.messages.length === 0) note("No earlier messages in this room.");
      return;
    case "typing":
      state.typing.set(event.name, Date.now() + 5000);
      return renderTyping();
    case "rooms":
      return note(
        `Rooms: ${event.rooms.map((r) => `#${r.room} (${r.members})`).join(", ") || "none"}`,
      );
    case "joined":
      state.members.push(event.name);
      state.count += 1;
      renderMembers();
      return note(`${event.name} joined`, "notice", event.ts);
    case "left":
      state.members = state.members.filter((name) => name !== event.name);
      state.count -= 1;
      renderMembers();
      return note(`${event.name} left`, "notice", event.ts);
    case "presence": {
      // A big room: a summary instead of a notice per person. The list shows the names we know.
      const gone = new Set(event.left);
      state.members = state.members.filter((name) => !gone.has(name) || name === state.name);
      for (const name of event.joined) {
        if (!gone.has(name) && !state.members.includes(name) && state.members.length < 500) {
          state.members.push(name);
        }
      }
      state.count = event.count;
      renderMembers();
      const parts = [];
      if (event.joinedCount) parts.push(`${event.joinedCount} joined`);
      if (event.leftCount) parts.push(`${event.leftCount} left`);
      return note(`${parts.join(", ")}; ${event.count} here now`, "notice", event.ts);
    }
    case "renamed":
      state.members = state.members.map((name) => name === event.from ? event.to : name);
      if (event.ref !== undefined || event.from === state.name) {
        state.name = event.to;
        // Only a name you asked for becomes your preference; the server may also give you
        // back the one you wanted (alice-2 -> alice) or make you yield it (alice -> alice-2).
        if (event.ref !== undefined || event.to === state.wanted) {
          state.wanted = event.to;
          store.set(NAME_KEY, event.to);
        }
        showIdentity();
      }
      renderMembers();
      return note(`${event.from} is now ${event.to}`, "notice", event.ts);
    case "members":
      state.members = event.members;
      state.count = event.members.length;
      renderMembers();
      return note(`${event.members.length} in #${event.room}: ${event.members.join(", ")}`);
    case "error": {
      const item = event.ref === undefined ? undefined : state.pending.get(String(event.ref));
      if (item) {
        item.classList.replace("pending", "failed");
        state.pending.delete(String(event.ref));
      }
      if (["bad_name", "name_taken", "bad_room"].includes(event.code)) showIdentity();
      return note(event.message, "error");
    }
    case "unknown": {
      // The server could not tell whether it kept the message: it stays pending; it is
      // acknowledged if it was kept, and sent again with its key after a reconnect.
      const item = event.ref === undefined ? undefined : state.pending.get(String(event.ref));
      item?.classList.add("unsure");
      if (item) item.title = event.message;
      return note(event.message, "notice");
    }
    case "notice":
      return note(event.text);
    case "topic":
      state.topic = event.topic;
      renderTopic();
      if (event.by === undefined) return note(event.topic ? `Topic: ${event.topic}` : "No topic.");
      return note(
        event.topic
          ? `${event.by} set the topic: ${event.topic}`
          : `${event.by} cleared the topic.`,
      );
    case "moderated":
      return note(moderation(event));
    case "deleted":
      return markDeleted(event.id);
    case "private":
      return showPrivate(event);
  }
}

/** @param {Record<string, unknown>} message */
function send(message) {
  if (state.socket?.readyState !== WebSocket.OPEN) {
    note("Not connected: nothing was sent. It will reconnect by itself.", "error");
    return false;
  }
  state.socket.send(JSON.stringify(message));
  return true;
}

/** How long the server remembers a message's key (docs/PROTOCOL.md). */
const KEY_WINDOW_MS = 10 * 60 * 1000;

/**
 * A random message key. Not crypto.randomUUID(): that exists only in secure contexts, and the
 * page is also served over plain HTTP on a LAN address.
 */
function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** @param {string} text */
function say(text, action = false) {
  const ref = String(state.nextRef++);
  // The message's idempotency key: a resend with it is not shown twice.
  const key = newKey();
  if (!send({ type: action ? "me" : "say", text, ref, key })) return false;
  const item = document.createElement("li");
  item.classList.add("pending");
  item.dataset.text = text;
  item.dataset.key = key;
  item.dataset.sent = String(Date.now());
  if (action) item.dataset.action = "1";
  fillMessage(item, { from: state.name, text, ts: Date.now(), action });
  state.pending.set(ref, item);
  append(item);
  return true;
}

/** @param {string} line */
function command(line) {
  const [word = "", ...rest] = line.slice(1).trim().split(/\s+/);
  const arg = rest.join(" ");
  switch (word.toLowerCase()) {
    case "nick":
    case "name":
      return send({ type: "nick", name: arg, ref: String(state.nextRef++) });
    case "join":
      return send({ type: "join", room: arg, ref: String(state.nextRef++) });
    case "who":
    case "names":
      return send({ type: "who" });
    case "rooms":
      return send({ type: "rooms" });
    case "history": {
      const limit = arg === "" ? 50 : Number(arg);
      if (!Number.isInteger(limit) || limit < 1) {
        note("Usage: /history [N], N a whole number: loads N earlier messages.", "error");
        return false;
      }
      return loadEarlier(limit);
    }
    case "me":
      return say(arg, true);
    case "quit":
      state.socket?.close(1000, "bye");
      return true;
    case "help":
      note(COMMANDS);
      return true;
    case "msg":
    case "tell": {
      const [to = "", ...words] = rest;
      return send({ type: "msg", to, text: words.join(" "), ref: String(state.nextRef++) });
    }
    case "topic":
      return send(arg === "" ? { type: "topic" } : { type: "topic", topic: arg });
    case "kick":
    case "mute":
    case "unmute":
    case "ban":
    case "unban": {
      const [target = "", ...words] = rest;
      const duration = /^\d+[smhd]$/.test(words[0] ?? "") ? words.shift() : undefined;
      // The server reads an address (1.2.3.4, or one with colons) in a ban's name as one.
      return send({
        type: word.toLowerCase(),
        name: target,
        ...(duration ? { duration } : {}),
        ...(words.length ? { reason: words.join(" ") } : {}),
        ref: String(state.nextRef++),
      });
    }
    case "delete":
      return send({ type: "delete", id: Number(arg), ref: String(state.nextRef++) });
    case "token":
      return send({ type: "token", token: arg, ref: String(state.nextRef++) });
    default:
      note(`Unknown command /${word}. ${COMMANDS}`, "error");
      return false;
  }
}

ui.compose.addEventListener("submit", (event) => {
  event.preventDefault();
  const line = ui.text.value;
  if (line.trim() === "") return;
  const isCommand = line.startsWith("/") && !line.startsWith("//");
  const sent = isCommand ? command(line) : say(line.startsWith("//") ? line.slice(1) : line);
  if (sent) ui.text.value = "";
});

ui.identity.addEventListener("submit", (event) => {
  event.preventDefault();
  // A guest's name shows the server's mark (~); what the person asks for is the name after it.
  const name = ui.name.value.trim().replace(/^~/, "");
  const room = ui.room.value.trim().replace(/^#/, "").toLowerCase();
  const online = state.socket?.readyState === WebSocket.OPEN;
  if (name && name !== state.name && `~${name}` !== state.name) {
    // Remembered only once the server grants it (see "renamed" and "welcome").
    if (online) send({ type: "nick", name, ref: String(state.nextRef++) });
    else state.wanted = name;
  }
  if (room && room !== state.room) {
    if (online) send({ type: "join", room, ref: String(state.nextRef++) });
    else state.room = room;
  }
  ui.text.focus();
});

ui.auth.addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = ui.token.value.trim();
  const auth = await checkToken();
  if (auth && !auth.accepted) return askForToken();
  localStorage.setItem(TOKEN_KEY, state.token);
  ui.auth.hidden = true;
  ui.token.value = "";
  state.attempt = 0;
  connect();
  ui.text.focus();
});

/** Asks for `limit` messages before the oldest one shown (the button, and `/history N`). */
function loadEarlier(limit = 50) {
  const before = oldestShown();
  ui.older.disabled = true;
  const request = before === Infinity
    ? { type: "history", limit }
    : { type: "history", before, limit };
  const sent = send(request);
  if (!sent) ui.older.disabled = false;
  return sent;
}

ui.older.addEventListener("click", () => loadEarlier());

ui.text.addEventListener("input", () => {
  const value = ui.text.value;
  if (value === "" || value.startsWith("/") || state.socket?.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.typingSentAt < 2000) return;
  state.typingSentAt = Date.now();
  state.socket.send(JSON.stringify({ type: "typing" }));
});

ui.retry.addEventListener("click", () => {
  state.attempt = 0;
  connect();
});
addEventListener("online", () => state.socket || connect());

showIdentity();
checkToken().then((auth) => {
  state.tokenRequired = auth?.required ?? false;
  if (auth && !auth.accepted) askForToken();
  else connect();
});
