/**
 * The page in a real browser: headless Chromium driven by playwright-core, against a real
 * server on a free loopback port. Each person gets their own browser context (own storage).
 *
 * Needs /usr/bin/chromium. Without it these tests are skipped loudly, except under CI=true,
 * where they fail: CI must not go green by silently not testing the page.
 */

import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import type { Browser, BrowserContextOptions, Page } from "playwright-core";
import { createApp } from "../lib/app.ts";
import type { Options } from "../lib/ops/config.ts";
import { Client, signedToken, startServer, TEST_JWT_SECRET } from "./helpers.ts";
import type { TestServer } from "./helpers.ts";

const CHROMIUM = "/usr/bin/chromium";
const IN_CI = Deno.env.get("CI") === "true";

function chromiumInstalled(): boolean {
  try {
    Deno.statSync(CHROMIUM);
    return true;
  } catch {
    return false;
  }
}

const HAVE_CHROMIUM = chromiumInstalled();
const SKIP = !HAVE_CHROMIUM && !IN_CI;

if (SKIP) {
  const bar = "!".repeat(80);
  console.warn(
    [
      bar,
      `!!! SKIPPING tests/browser_test.ts: ${CHROMIUM} does not exist, so the page is NOT`,
      "!!! being tested in a browser. Install Chromium (apt-get install chromium) to run it.",
      "!!! (With CI=true these tests fail instead of being skipped.)",
      bar,
    ].join("\n"),
  );
}

// ---- the browser -------------------------------------------------------------------------

/** Launches headless Chromium, hands it to `body`, and always closes it. */
async function withBrowser(body: (browser: Browser) => Promise<void>): Promise<void> {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    await body(browser);
  } finally {
    await browser.close();
  }
}

/** Registers a browser test: ignored (loudly, above) without Chromium, failing under CI. */
function browserTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name,
    ignore: SKIP,
    async fn() {
      if (!HAVE_CHROMIUM) {
        throw new Error(`CI=true but ${CHROMIUM} is missing: .ci/run must install it`);
      }
      await fn();
    },
  });
}

// ---- the page ------------------------------------------------------------------------------

// The callbacks passed to page.evaluate/waitForFunction run inside Chromium, where the DOM
// exists; Deno's type library has none, so this declares the little of it they use.
interface DomElement {
  readonly className: string;
  readonly textContent: string | null;
  readonly dataset: Record<string, string | undefined>;
  querySelector(selectors: string): DomElement | null;
}
declare const localStorage: { getItem(key: string): string | null };
declare const document: {
  querySelector(selectors: string): DomElement | null;
  querySelectorAll(selectors: string): Iterable<DomElement>;
};

/** One item of a page's #log, as plain data. */
interface LogItem {
  className: string;
  from: string | null;
  text: string | null;
  id: string | null;
}

/** A person's page, and what went wrong in it (uncaught errors, console errors/warnings). */
interface Person {
  name: string;
  page: Page;
  problems: string[];
}

/** How long any one wait or action in a page may take (Playwright's default is 30 s). */
const TIMEOUT = 10_000;

/** Console errors that are expected: a reconnect attempt while the server is down. */
const EXPECTED_CONSOLE = /^WebSocket connection to '.*' failed/;

/**
 * Opens `/?room=ROOM` in a new browser context (its own localStorage), waits until it is online,
 * then sets the name through the #name field and Enter, and waits until the server agreed.
 */
async function join(
  browser: Browser,
  server: TestServer,
  room: string,
  name: string,
  options: BrowserContextOptions = {},
): Promise<Person> {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
  page.on("console", (message) => {
    const type = message.type();
    if ((type === "error" || type === "warning") && !EXPECTED_CONSOLE.test(message.text())) {
      problems.push(`console.${type}: ${message.text()}`);
    }
  });
  await page.goto(server.http(`/?room=${room}`));
  await waitFor(page, "online", page.locator('#status[data-state="online"]').waitFor());
  await page.fill("#name", name);
  await page.press("#name", "Enter");
  await waitForName(page, name);
  return { name, page, problems };
}

/** Waits for `wait`; on failure, says what it waited for and what the page showed instead. */
async function waitFor(page: Page, what: string, wait: Promise<unknown>): Promise<void> {
  try {
    await wait;
  } catch (error) {
    const shown = await page.evaluate(() => ({
      status: document.querySelector("#status")?.dataset.state,
      members: [...document.querySelectorAll("#members > li")].map((li) => li.textContent),
      log: [...document.querySelectorAll("#log > li")].map((li) =>
        [
          li.className,
          li.querySelector(".from")?.textContent,
          li.querySelector(".text")?.textContent,
        ]
          .filter(Boolean).join(" | ")
      ),
    })).catch(() => "(page gone)");
    throw new Error(`gave up waiting for ${what}; the page shows ${JSON.stringify(shown)}`, {
      cause: error,
    });
  }
}

/** Waits until the page's own entry in #members (li.me) is `name`. */
async function waitForName(page: Page, name: string): Promise<void> {
  await waitFor(
    page,
    `own name ${name}`,
    page.waitForFunction(
      (name) => document.querySelector("#members li.me")?.textContent === name,
      name,
    ),
  );
}

/** Waits until #members lists exactly `names`, in any order. */
async function waitForMembers(page: Page, names: string[]): Promise<void> {
  await waitFor(
    page,
    `members ${JSON.stringify(names)}`,
    page.waitForFunction(
      (expected) => {
        // A moderator's list has tools beside each name: the name is the item's data-name.
        const shown = [...document.querySelectorAll("#members > li")].map((li) => li.dataset.name);
        return shown.length === expected.length && expected.every((name) => shown.includes(name));
      },
      names,
    ),
  );
}

/** Waits until #log has an acknowledged message (not pending, with an id) `from: text`. */
async function waitForMessage(page: Page, from: string, text: string): Promise<void> {
  await waitFor(
    page,
    `message ${JSON.stringify(`${from}: ${text}`)}`,
    page.waitForFunction(
      ([from, text]) =>
        [...document.querySelectorAll("#log > li")].some((li) =>
          li.querySelector(".from")?.textContent === from &&
          li.querySelector(".text")?.textContent === text &&
          !li.className.split(" ").includes("pending") &&
          li.dataset.id !== undefined
        ),
      [from, text] as const,
    ),
  );
}

/** Everything in a page's #log, in order. */
function readLog(page: Page): Promise<LogItem[]> {
  return page.evaluate(() =>
    [...document.querySelectorAll("#log > li")].map((li) => ({
      className: li.className,
      from: li.querySelector(".from")?.textContent ?? null,
      text: li.querySelector(".text")?.textContent ?? null,
      id: li.dataset.id ?? null,
    }))
  );
}

/** Types a line into #text and sends it with Enter (or with the Send button). */
async function say(person: Person, text: string, by: "enter" | "button" = "enter"): Promise<void> {
  await person.page.fill("#text", text);
  if (by === "enter") await person.page.press("#text", "Enter");
  else await person.page.click("#compose button[type=submit]");
}

/** Starts a server on `port` again (a restart of the one there before); its stop joins `stops`. */
function restartOn(port: number, options: Partial<Options>, stops: (() => Promise<void>)[]): void {
  const app = createApp(options);
  const abort = new AbortController();
  const server = Deno.serve(
    { port, hostname: "127.0.0.1", signal: abort.signal, onListen() {} },
    app.fetch,
  );
  stops.push(async () => {
    await app.shutdown(1000);
    abort.abort();
    await server.finished;
  });
}

/** Saves a screenshot for a person to look at, when NATTER_SCREENSHOTS names a directory. */
async function screenshot(page: Page, name: string): Promise<void> {
  const dir = Deno.env.get("NATTER_SCREENSHOTS");
  if (dir) await page.screenshot({ path: `${dir}/${name}` });
}

function assertNoProblems(...people: Person[]): void {
  for (const person of people) assert.deepEqual(person.problems, [], `${person.name}'s page`);
}

// ---- the tests -----------------------------------------------------------------------------

browserTest("page: two people in a room chat; a third room hears nothing", async () => {
  const server = startServer();
  try {
    await withBrowser(async (browser) => {
      const alice = await join(browser, server, "r1", "alice");
      // Bob's browser prefers dark mode: the chat must not care, and it gives the dark screenshot.
      const bob = await join(browser, server, "r1", "bob", { colorScheme: "dark" });
      const carol = await join(browser, server, "r2", "carol");

      await waitForMembers(bob.page, ["alice", "bob"]);
      await waitForMembers(alice.page, ["alice", "bob"]);

      await say(alice, "hello bob");
      await waitForMessage(bob.page, "alice", "hello bob");
      const atBob = (await readLog(bob.page)).filter((item) => item.text === "hello bob");
      assert.equal(atBob.length, 1, "bob sees the message once");
      assert.equal(atBob[0]?.from, "alice");

      // Alice's own copy was shown at once as pending; the server's echo acknowledges it.
      await waitForMessage(alice.page, "alice", "hello bob");
      const atAlice = (await readLog(alice.page)).filter((item) => item.text === "hello bob");
      assert.equal(atAlice.length, 1, "the acknowledgement updates alice's item, not adds one");
      const mine = atAlice[0]?.className.split(" ") ?? [];
      assert.ok(!mine.includes("pending"), `alice's item is acknowledged: ${mine.join(" ")}`);
      assert.ok(mine.includes("mine"), `alice's item is marked as hers: ${mine.join(" ")}`);

      // Carol (r2) says something and waits for its echo: the server sends to one socket in
      // order, so anything r1 ever sent her would have arrived before that acknowledgement.
      await say(carol, "anyone in r2?");
      await waitForMessage(carol.page, "carol", "anyone in r2?");
      const atCarol = await readLog(carol.page);
      assert.ok(
        atCarol.every((item) => item.text !== "hello bob" && item.from !== "alice"),
        `carol's log has nothing from r1: ${JSON.stringify(atCarol)}`,
      );
      await waitForMembers(carol.page, ["carol"]);
      assert.ok(
        (await readLog(bob.page)).every((item) => item.text !== "anyone in r2?"),
        "and r1 hears nothing from r2",
      );
      // Bob tries to take alice's name: refused, and his page keeps (and remembers) "bob".
      await bob.page.fill("#name", "Alice");
      await bob.page.press("#name", "Enter");
      await waitFor(
        bob.page,
        "the name_taken error",
        bob.page.locator("#log > li.error", { hasText: 'name "Alice" is taken' }).waitFor(),
      );
      assert.equal(await bob.page.inputValue("#name"), "bob");
      assert.equal(await bob.page.evaluate(() => localStorage.getItem("natter.name")), "bob");
      await waitForMembers(alice.page, ["alice", "bob"]);

      assertNoProblems(alice, bob, carol);

      // For a human to look at (not asserted).
      await screenshot(alice.page, "page.png");
      await screenshot(bob.page, "page-dark.png");
    });
  } finally {
    await server.close();
  }
});

browserTest("page: HTML in a message is shown as text and never runs", async () => {
  const payload = `<img src=x onerror="window.__xss=1">`;
  const server = startServer();
  try {
    await withBrowser(async (browser) => {
      const alice = await join(browser, server, "r1", "alice");
      // Bob is on a phone: the phone-sized screenshot comes from his page.
      const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
      const bob = await join(browser, server, "r1", "bob", phone);
      await say(alice, payload);
      await waitForMessage(bob.page, "alice", payload);
      await waitForMessage(alice.page, "alice", payload);
      for (const person of [bob, alice]) {
        const page = person.page;
        const texts = await page.locator("#log > li:not(.notice) .text").allTextContents();
        assert.deepEqual(texts, [payload], `${person.name} sees the payload literally`);
        assert.equal(await page.locator("#log img").count(), 0, `no <img> at ${person.name}`);
        assert.equal(await page.locator("img").count(), 0, `no <img> anywhere at ${person.name}`);
        const xss = await page.evaluate(() => (globalThis as { __xss?: unknown }).__xss);
        assert.equal(xss, undefined, `window.__xss is unset at ${person.name}`);
      }
      assertNoProblems(alice, bob);

      // For a human to look at (not asserted): a long line shows how text wraps on a phone.
      const long = "and a longer line, to see how text wraps on a narrow screen: ".repeat(3).trim();
      await say(bob, long);
      await waitForMessage(bob.page, "bob", long);
      await screenshot(bob.page, "page-phone.png");
    });
  } finally {
    await server.close();
  }
});

browserTest("page and a plain-text (REPL) client in the same room hear each other", async () => {
  const server = startServer();
  try {
    await withBrowser(async (browser) => {
      const alice = await join(browser, server, "r1", "alice");
      const repl = await Client.open(server.ws("/?room=r1&name=repl"));
      try {
        assert.ok(
          repl.lines.some((line) => line.startsWith("* you are repl in #r1; also here: alice.")),
          `the text client's welcome names alice: ${JSON.stringify(repl.lines)}`,
        );
        await waitForMembers(alice.page, ["alice", "repl"]);

        await say(alice, "hi repl, from the page", "button");
        await repl.next((line) => line === "alice: hi repl, from the page");

        repl.send("hi from the repl");
        await waitForMessage(alice.page, "repl", "hi from the repl");
        const item = (await readLog(alice.page)).find((item) => item.text === "hi from the repl");
        assert.ok(item, "alice's page shows the text client's line");
        assert.equal(item.from, "repl");
        assert.ok(!item.className.split(" ").includes("mine"), "not marked as alice's own");
        assertNoProblems(alice);
      } finally {
        await repl.close();
      }
    });
  } finally {
    await server.close();
  }
});

browserTest("page: goes offline when the server stops and reconnects by itself", async () => {
  const first = startServer();
  const port = first.port;
  /** Stops the second server, once started on the first one's port. */
  const stops: (() => Promise<void>)[] = [];
  try {
    await withBrowser(async (browser) => {
      const alice = await join(browser, first, "r1", "alice");
      const online = alice.page.locator('#status[data-state="online"]');
      const offline = alice.page.locator('#status[data-state="offline"]');

      await first.close();
      // Nothing listens now: the page keeps failing to reconnect and shows offline between tries.
      await waitFor(alice.page, "offline", offline.waitFor());

      restartOn(port, {}, stops);

      await waitFor(alice.page, "online again", online.waitFor({ timeout: 10_000 }));
      // It came back under the same name and room, and says so.
      await waitForName(alice.page, "alice");
      assert.equal(new URL(alice.page.url()).searchParams.get("room"), "r1");
      const notices = await alice.page.locator("#log > li.notice .text").allTextContents();
      assert.ok(notices.includes("Reconnected as alice."), JSON.stringify(notices));

      // And the new server carries the conversation.
      const repl = await Client.open(`ws://127.0.0.1:${port}/?room=r1&name=repl`);
      try {
        await say(alice, "back again");
        await repl.next((line) => line === "alice: back again");
      } finally {
        await repl.close();
      }
      assertNoProblems(alice);
    });
  } finally {
    for (const stop of stops) await stop();
    await first.close(); // again, if the test failed before closing it; closing twice is harmless
  }
});

browserTest("page: asks for the token when the server needs one, and remembers it", async () => {
  const token = "let-me-in-please";
  const server = startServer({ token });
  try {
    await withBrowser(async (browser) => {
      const context = await browser.newContext();
      context.setDefaultTimeout(TIMEOUT);
      const page = await context.newPage();
      await page.goto(server.http("/?room=secret"));
      const auth = page.locator("#auth");
      await waitFor(page, "the token form", auth.waitFor({ state: "visible" }));
      assert.equal(await page.locator("#status").getAttribute("data-state"), "closed");
      assert.equal(server.app.hub.connections, 0, "no socket without the token");

      await page.fill("#token", "wrong-token-123");
      await page.press("#token", "Enter");
      await waitFor(
        page,
        "the refusal",
        page.locator("#status-text", { hasText: "not accepted" }).waitFor(),
      );
      assert.equal(await auth.isVisible(), true);

      await page.fill("#token", token);
      await page.press("#token", "Enter");
      await waitFor(page, "online", page.locator('#status[data-state="online"]').waitFor());
      assert.equal(await auth.isVisible(), false);
      assert.equal(server.app.hub.connections, 1);

      await page.reload();
      await waitFor(
        page,
        "online after a reload",
        page.locator('#status[data-state="online"]').waitFor(),
      );
      assert.equal(await auth.isVisible(), false, "the token was remembered");
      await context.close();
    });
  } finally {
    await server.close();
  }
});

/** The ids of the messages a page shows, in order. */
function shownIds(page: Page): Promise<string[]> {
  return page.evaluate(() =>
    [...document.querySelectorAll("#log > li")].map((li) => li.dataset.id).filter((id) =>
      id !== undefined
    )
  ) as Promise<string[]>;
}

browserTest("page: a reload shows the conversation again, each message once", async () => {
  const server = startServer();
  try {
    await withBrowser(async (browser) => {
      const alice = await join(browser, server, "talk", "alice");
      const bob = await join(browser, server, "talk", "bob");
      // Typing shows on the other page, and goes when the message arrives.
      await alice.page.fill("#text", "on");
      await waitFor(
        bob.page,
        "typing",
        bob.page.locator("#typing", { hasText: "alice is typing…" }).waitFor(),
      );
      for (const text of ["one", "two", "three"]) await say(alice, text);
      await waitForMessage(bob.page, "alice", "three");
      assert.equal(await bob.page.locator("#typing").textContent(), "");
      await bob.page.reload();
      await waitFor(bob.page, "online", bob.page.locator('#status[data-state="online"]').waitFor());
      await waitForMessage(bob.page, "alice", "three");
      const texts = await bob.page.locator("#log > li:not(.notice) .text").allTextContents();
      assert.deepEqual(texts, ["one", "two", "three"]);
      assertNoProblems(alice, bob);
    });
  } finally {
    await server.close();
  }
});

browserTest(
  "page: after the server restarts, it fills in what it missed without duplicates",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "natter-page-" });
    const data = `${dir}/natter.db`;
    const first = startServer({ data });
    const port = first.port;
    const stops: (() => Promise<void>)[] = [];
    try {
      await withBrowser(async (browser) => {
        const alice = await join(browser, first, "r", "alice");
        const repl = await Client.open(first.ws("/?room=r&name=repl"));
        repl.send("before the restart");
        await waitForMessage(alice.page, "repl", "before the restart");
        await repl.close();
        await first.close();
        await waitFor(
          alice.page,
          "offline",
          alice.page.locator('#status[data-state="offline"]').waitFor(),
        );

        // The same file, the same port: a restart. Someone speaks before the page is back.
        restartOn(port, { data }, stops);
        const early = await Client.open(`ws://127.0.0.1:${port}/?room=r&name=early`);
        early.send("while you were away");
        await early.close();

        await waitFor(
          alice.page,
          "online again",
          alice.page.locator('#status[data-state="online"]').waitFor(),
        );
        await waitForMessage(alice.page, "early", "while you were away");
        const ids = await shownIds(alice.page);
        assert.equal(new Set(ids).size, ids.length, `no message shown twice: ${ids}`);
        const texts = await alice.page.locator("#log > li:not(.notice) .text").allTextContents();
        assert.deepEqual(texts, ["before the restart", "while you were away"]);
        assertNoProblems(alice);
      });
    } finally {
      for (const stop of stops) await stop();
      await first.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

browserTest(
  "page: a big room shows its count and one summary for a crowd, not a notice each",
  async () => {
    const server = startServer({ maxConnections: 1000 });
    const crowd: Client[] = [];
    try {
      for (let i = 0; i < 120; i += 20) {
        crowd.push(
          ...await Promise.all(
            Array.from(
              { length: 20 },
              (_, j) => Client.open(server.ws(`/?room=big&name=c${i + j}`)),
            ),
          ),
        );
      }
      await withBrowser(async (browser) => {
        const alice = await join(browser, server, "big", "alice");
        await waitFor(
          alice.page,
          "the count",
          alice.page.locator("#count", { hasText: "(121)" }).waitFor(),
        );
        for (let i = 0; i < 5; i++) {
          crowd.push(await Client.open(server.ws(`/?room=big&name=late${i}`)));
        }
        await waitFor(
          alice.page,
          "the summary that brings the count to 126",
          // Summaries cover half a second each: the joins may share one or be split over two.
          alice.page.locator("#log > li.notice", { hasText: /\d+ joined; 126 here now$/ })
            .waitFor(),
        );
        assert.equal(await alice.page.locator("#count").textContent(), "(126)");
        const notices = await alice.page.locator("#log > li.notice .text").allTextContents();
        assert.equal(
          notices.filter((text) => /^late\d joined$/.test(text)).length,
          0,
          "no notice per person",
        );
        assert.equal(await alice.page.locator("#members li", { hasText: "late3" }).count(), 1);
        assertNoProblems(alice);
      });
    } finally {
      await Promise.all(crowd.map((client) => client.close()));
      await server.close();
    }
  },
);

browserTest(
  "page: links are links, /help and /history work, a reload is not announced, offline says so",
  async () => {
    const server = startServer();
    let closed = false;
    try {
      await withBrowser(async (browser) => {
        const alice = await join(browser, server, "links", "alice");
        const bob = await join(browser, server, "links", "bob");
        await waitForMembers(alice.page, ["alice", "bob"]);

        // Web addresses become links (http and https only), as elements, with no opener.
        const text = "see https://example.com/a?b=1, not javascript:alert(1), and http://x.test. " +
          "(also https://en.wikipedia.org/wiki/Deno_(software))";
        await say(bob, text);
        await waitForMessage(alice.page, "bob", text);
        const links = await alice.page.evaluate(() =>
          [...document.querySelectorAll("#log a")].map((element) => {
            const a = element as unknown as { href: string; rel: string; target: string };
            return { href: a.href, text: element.textContent, rel: a.rel, target: a.target };
          })
        );
        const link = { rel: "noopener noreferrer", target: "_blank" };
        assert.deepEqual(links, [
          { href: "https://example.com/a?b=1", text: "https://example.com/a?b=1", ...link },
          { href: "http://x.test/", text: "http://x.test", ...link },
          {
            href: "https://en.wikipedia.org/wiki/Deno_(software)",
            text: "https://en.wikipedia.org/wiki/Deno_(software)",
            ...link,
          },
        ]);

        // Every text command works in the page too.
        await say(alice, "/help");
        await alice.page.locator("#log > li", { hasText: "/history [N]" }).waitFor();
        await say(alice, "/history 5");
        await alice.page.locator("#log > li", { hasText: "No earlier messages in this room." })
          .waitFor();
        assert.equal(
          await alice.page.locator("#log > li", { hasText: "Unknown command" }).count(),
          0,
        );

        // Bob reloads: alice hears nothing of it, and bob is bob again.
        const before = (await readLog(alice.page)).length;
        await bob.page.reload();
        await waitFor(
          bob.page,
          "online",
          bob.page.locator('#status[data-state="online"]').waitFor(),
        );
        await waitForName(bob.page, "bob");
        const mine = bob.page.locator("#log > li.mine", { hasText: "see https://example.com" });
        assert.equal(await mine.count(), 1, "his own message, from history, is marked as his");
        await say(bob, "back");
        await waitForMessage(alice.page, "bob", "back");
        const after = (await readLog(alice.page)).slice(before);
        assert.deepEqual(
          after.filter((item) => /bob (left|joined)/.test(item.text ?? "")),
          [],
          `no left or joined for a reload: ${JSON.stringify(after)}`,
        );
        await waitForMembers(alice.page, ["alice", "bob"]);

        // The server goes away: the page says it is offline and shows no stale member list.
        await server.close();
        closed = true;
        await waitFor(
          alice.page,
          "offline",
          alice.page.locator('#status[data-state="offline"]').waitFor(),
        );
        assert.equal(await alice.page.locator("#count").textContent(), "(offline)");
        assert.equal(await alice.page.locator("#members > li").count(), 0);
        assertNoProblems(alice, bob);
      });
    } finally {
      if (!closed) await server.close();
    }
  },
);

browserTest(
  "page: screenshots on desktop and phone, light and dark (docs/screenshots)",
  async () => {
    // NATTER_SCREENSHOTS=docs/screenshots refreshes the README's; otherwise they go to a temp dir.
    const keep = Deno.env.get("NATTER_SCREENSHOTS");
    const dir = keep ?? await Deno.makeTempDir();
    const server = startServer();
    try {
      await withBrowser(async (browser) => {
        const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
        const views: [string, BrowserContextOptions][] = [
          ["desktop-light", { viewport: { width: 1100, height: 640 }, colorScheme: "light" }],
          ["desktop-dark", { viewport: { width: 1100, height: 640 }, colorScheme: "dark" }],
          ["phone-light", { ...phone, colorScheme: "light" }],
          ["phone-dark", { ...phone, colorScheme: "dark" }],
        ];
        const ada = await join(browser, server, "demo", "ada");
        await say(ada, "Welcome to #demo! Notes are at https://example.com/notes");
        await say(ada, "/me waves");
        const backgrounds = new Set<string>();
        for (const [view, options] of views) {
          const person = await join(
            browser,
            server,
            "demo",
            `grace-${view}`,
            options,
          );
          await say(person, `hello from the ${view.replace("-", " ")} page`);
          await waitForMessage(
            person.page,
            person.name,
            `hello from the ${view.replace("-", " ")} page`,
          );
          backgrounds.add(
            String(await person.page.evaluate("getComputedStyle(document.body).backgroundColor")),
          );
          const path = `${dir}/${view}.png`;
          await person.page.screenshot({ path });
          assert.ok(Deno.statSync(path).size > 10_000, `${path} shows a page`);
          assertNoProblems(person);
          await person.page.context().close();
        }
        assert.equal(backgrounds.size, 2, "light and dark themes differ");
      });
    } finally {
      await server.close();
      if (!keep) await Deno.remove(dir, { recursive: true });
    }
  },
);

browserTest(
  "page: a server restarted without its history keeps the page's scrollback; a new room has nothing earlier to load",
  async () => {
    const first = startServer();
    const port = first.port;
    const stops: (() => Promise<void>)[] = [];
    try {
      await withBrowser(async (browser) => {
        const alice = await join(browser, first, "fresh", "alice");
        assert.equal(await alice.page.locator("#older").isHidden(), true, "nothing earlier");
        await say(alice, "said before the restart");
        await waitForMessage(alice.page, "alice", "said before the restart");
        await first.close();
        await waitFor(
          alice.page,
          "offline",
          alice.page.locator('#status[data-state="offline"]').waitFor(),
        );
        // The same port, a new in-memory server: a new epoch, no history.
        restartOn(port, {}, stops);
        await waitFor(
          alice.page,
          "online again",
          alice.page.locator('#status[data-state="online"]').waitFor(),
        );
        await alice.page.locator("#log > li", { hasText: "The server restarted" }).waitFor();
        const texts = await alice.page.locator("#log > li:not(.notice) .text").allTextContents();
        assert.deepEqual(texts, ["said before the restart"], "what was shown stays");
        const lost = alice.page.locator("#log > li", { hasText: "no longer kept" });
        assert.equal(await lost.count(), 0, "no claim that messages were lost");
        await say(alice, "after");
        await waitForMessage(alice.page, "alice", "after");
        assertNoProblems(alice);
      });
    } finally {
      for (const stop of stops) await stop();
      await first.close();
    }
  },
);

browserTest("page: a link's ?name= is the name the page asks for", async () => {
  const server = startServer();
  try {
    await withBrowser(async (browser) => {
      const context = await browser.newContext();
      context.setDefaultTimeout(TIMEOUT);
      const page = await context.newPage();
      await page.goto(server.http("/?room=linked&name=zed"));
      await waitForName(page, "zed");
      assert.equal(await page.inputValue("#name"), "zed");
    });
  } finally {
    await server.close();
  }
});

browserTest(
  "page: a moderator's tools (delete, mute, remove), the topic, a private message; a guest's page has no tools",
  async () => {
    const server = startServer({ jwtSecret: TEST_JWT_SECRET, guests: true });
    const token = await signedToken({ sub: "u-mod", name: "mod", role: "moderator" }, { ttl: 600 });
    try {
      await withBrowser(async (browser) => {
        const context = await browser.newContext();
        context.setDefaultTimeout(TIMEOUT);
        const page = await context.newPage();
        const problems: string[] = [];
        page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
        // A link with the token: the page takes it, and the address bar no longer shows it.
        await page.goto(server.http(`/?room=mods&token=${token}`));
        await waitForName(page, "mod");
        assert.ok(!page.url().includes("token="), `the token left the address: ${page.url()}`);
        const mod: Person = { name: "mod", page, problems };

        const bob = await Client.open(server.ws("/?room=mods&name=bob"));
        await waitForMembers(page, ["mod", "~bob"]);
        bob.send("buy cheap watches");
        await waitForMessage(page, "~bob", "buy cheap watches");

        // Delete: the tool on the message; everyone sees the tombstone.
        const spam = page.locator("#log > li", { hasText: "buy cheap watches" });
        await spam.locator("button.tool", { hasText: "Delete" }).click();
        await waitFor(page, "the tombstone", page.locator("#log > li.deleted").waitFor());
        assert.equal(
          await page.locator("#log > li.deleted .text").textContent(),
          "message deleted",
        );
        await bob.next((line) => /^\* mod deleted message \d+$/.test(line));

        // Mute: the tool beside the name.
        await page.locator('#members li[data-name="~bob"] button', { hasText: "Mute" }).click();
        await bob.next((line) => line === "* mod muted ~bob for 10m");
        bob.send("let me talk");
        assert.match(await bob.next((line) => line.startsWith("!")), /you are muted/);

        // The topic and a private message, typed as commands.
        await say(mod, "/topic Be kind here");
        await waitFor(
          page,
          "the topic",
          page.locator("#topic:not([hidden])", { hasText: "Be kind here" }).waitFor(),
        );
        await say(mod, "/msg ~bob a word in private");
        await bob.next((line) => line === "[private] mod -> ~bob: a word in private");
        await waitFor(
          page,
          "the private echo",
          page.locator("#log > li.private", { hasText: "a word in private" }).waitFor(),
        );

        // A guest's page: the topic and the tombstone, and no tools.
        const guestPage = await (await browser.newContext()).newPage();
        const guest: Person = { name: "~carol", page: guestPage, problems: [] };
        guestPage.on("pageerror", (error) => guest.problems.push(`uncaught: ${error.message}`));
        await guestPage.goto(server.http("/?room=mods&name=carol"));
        await waitForName(guestPage, "~carol");
        await waitFor(
          guest.page,
          "the topic",
          guest.page.locator("#topic", { hasText: "Be kind here" }).waitFor(),
        );
        assert.equal(await guest.page.locator("#log > li.deleted").count(), 1);
        assert.equal(await guest.page.locator("button.tool").count(), 0, "a guest has no tools");

        // Remove: bob's socket is closed, with the moderator's name in the reason.
        await page.locator('#members li[data-name="~bob"] button', { hasText: "Remove" }).click();
        const closed = await bob.closed;
        assert.equal(closed.code, 4004);
        await screenshot(page, "moderator.png");
        assertNoProblems(mod, guest);
      });
    } finally {
      await server.close();
    }
  },
);
