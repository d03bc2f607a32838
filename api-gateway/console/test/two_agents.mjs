// Two agents in the agent console, in a real browser (Debian's chromium, headless, driven by
// playwright-core): B has a history in the room that A reads, loading older messages on
// scroll; A types and sends; B sees "typing…", the unread badge, then the message when it
// opens the room, which reads it; A sees "Seen"; A edits the message and B sees the change.
// Run by api-gateway/tests/console.rs, which starts the gateway and makes the chat and tokens:
//
//   BASE_URL, TOKEN_A, TOKEN_B, ROOM_A, ROOM_B, HISTORY (messages B sent before),
//   SCREENSHOT (the PNG to write), PLAYWRIGHT_CORE (the package's folder),
//   CHROMIUM (default /usr/bin/chromium)
//
// Prints each step; exits non-zero at the first that fails.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const base = env('BASE_URL');
const history = Number(env('HISTORY'));
const { chromium } = await import(pathToFileURL(path.join(env('PLAYWRIGHT_CORE'), 'index.mjs')).href);

const step = (what) => console.log(`console test: ${what}`);
const WAIT = { timeout: 15000 };

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: ['--no-sandbox'],
});
try {
  const open = async (token) => {
    const context = await browser.newContext({ viewport: { width: 900, height: 600 } });
    const page = await context.newPage();
    page.on('pageerror', (e) => { console.error(`page error: ${e.message}`); process.exitCode = 1; });
    await page.goto(base + '/');
    await page.fill('#token', token);
    await page.click('#signin-form button[type=submit]');
    await page.waitForSelector('#connection.live', WAIT);
    return page;
  };
  const roomA = `#room-list li[data-room="${env('ROOM_A')}"]`;
  const roomB = `#room-list li[data-room="${env('ROOM_B')}"]`;
  const text = (page, selector) => page.locator(selector).innerText(WAIT);
  const waitText = (page, selector, expected) => page.waitForFunction(
    ([s, e]) => { const el = document.querySelector(s); return el && el.textContent.includes(e); },
    [selector, expected], WAIT);

  const a = await open(env('TOKEN_A'));
  const b = await open(env('TOKEN_B'));
  step('both signed in, WebSocket live');

  // A: the history is unread; opening the room reads it; older messages come on scroll.
  await waitText(a, `${roomA} .badge`, String(history));
  if ((await text(a, '#total-unread')) !== String(history)) throw new Error('A: total unread');
  await a.click(roomA);
  await a.waitForFunction(() => document.querySelectorAll('#messages li').length === 30, null, WAIT);
  await a.waitForSelector(`${roomA} .badge[hidden]`, { ...WAIT, state: 'attached' });
  step(`A opened the room: the newest 30 of ${history}, badge cleared`);
  await a.locator('#messages').evaluate((el) => { el.scrollTop = 0; });
  await a.waitForFunction((n) => document.querySelectorAll('#messages li').length === n, history, WAIT);
  const first = await a.locator('#messages li').first().innerText();
  if (!first.includes('history 0')) throw new Error(`A: the oldest message on top, got ${first}`);
  step('A scrolled up: older messages loaded, oldest on top');

  // A types: B sees it in its room list; A sends: B gets the badge.
  await a.locator('#messages').evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await a.click('#text');
  await a.keyboard.type('Hello B, ', { delay: 40 });
  await waitText(b, `${roomB} .typing-hint`, 'typing');
  step('B sees "typing…"');
  const shots = [['B, while A types', await b.screenshot()]];
  await a.keyboard.type('can you take this one?', { delay: 10 });
  await a.click('#compose button[type=submit]');
  await waitText(b, `${roomB} .badge`, '1');
  await waitText(b, '#total-unread', '1');
  await b.waitForFunction((s) => document.querySelector(s).textContent === '', `${roomB} .typing-hint`, WAIT);
  step('A sent: B has an unread badge of 1, and the typing hint is gone');
  shots.push(['B, when it arrives', await b.screenshot()]);

  // B opens the room: the message is there, newest at the bottom, and reading it clears the
  // badge; A sees "Seen".
  await b.click(roomB);
  await waitText(b, '#messages li:last-child', 'can you take this one?');
  await b.waitForSelector(`${roomB} .badge[hidden]`, { ...WAIT, state: 'attached' });
  await waitText(b, '#total-unread', '0');
  step('B opened the room: the message at the bottom, badge cleared');
  await waitText(a, '#messages li.mine:last-child .seen', 'Seen');
  step('A sees "Seen"');

  // A corrects the message; B sees the edit.
  await a.click('#messages li.mine:last-child .edit');
  await a.fill('#messages li.mine:last-child input.editing', 'Hello B, can you take this one, please?');
  await a.press('#messages li.mine:last-child input.editing', 'Enter');
  await waitText(b, '#messages li:last-child', 'please?');
  await waitText(b, '#messages li:last-child .meta', 'edited');
  step('A edited the message; B sees the change');

  // B answers while A watches the typing line of the open room.
  await b.click('#text');
  await b.keyboard.type('On it', { delay: 40 });
  await waitText(a, '#typing', 'is typing');
  await b.keyboard.press('Enter');
  await waitText(a, '#messages li:last-child', 'On it');
  step('B answered; A saw it typing, then the answer');

  // The README's picture: B while A types and when the message arrives, then A's screen.
  await waitText(b, '#messages li.mine:last-child .seen', 'Seen');
  shots.push(['A, at the end', await a.screenshot()]);
  const figures = shots.map(([caption, png]) => `<figure style="margin:0;font:15px system-ui">
      <img src="data:image/png;base64,${png.toString('base64')}" width="600" style="display:block">
      <figcaption style="padding-top:6px">${caption}</figcaption></figure>`).join('');
  const board = await (await browser.newContext({ viewport: { width: 1880, height: 460 } })).newPage();
  await board.setContent(`<body style="margin:0;background:#dfe3ea;display:flex;gap:20px;padding:20px">${figures}</body>`);
  await board.screenshot({ path: env('SCREENSHOT') });
  step(`screenshot: ${env('SCREENSHOT')}`);
} finally {
  await browser.close();
}
