// Where to connect (PROTOCOL.md §2.5): ask /v1/discover before every
// connection attempt, pick a node, and fall back to the page's own
// /v1/ws whenever discovery cannot say anything better. No DOM.
//
// The rule (web/README.md, "Servers with several nodes"):
// - one node listed (a single server): the page's own /v1/ws, always. A
//   single server behind a reverse proxy or a TLS terminator names
//   addresses the browser may not be able to reach; the page's own origin
//   is the one address known to work;
// - two or more (a cluster): the first node whose `ws` is usable from this
//   page (an https page can only open wss://), skipping the node the last
//   connection was on (told to go, cut off or unreachable) when another is
//   listed;
// - discovery unreachable, slow (DISCOVERY_TIMEOUT_MS in all), not 200,
//   not JSON or not the shape of §2.5: the page's own /v1/ws.

export const DISCOVERY_TIMEOUT_MS = 2000;

/** A /v1/discover answer that cannot be used (the reason is the message). */
export class DiscoveryError extends Error {
  constructor(message) {
    super(message);
    this.name = "DiscoveryError";
  }
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** A ws:// or wss:// URL, normalized, or null for anything else. */
function wsUrl(v) {
  if (typeof v !== "string" || v === "") return null;
  let u;
  try {
    u = new URL(v);
  } catch {
    return null;
  }
  return u.protocol === "ws:" || u.protocol === "wss:" ? u.href : null;
}

/**
 * The nodes of a /v1/discover body (parsed JSON): [{node, ws}], in the
 * server's order. `ws` is null when the node has no usable WebSocket (off,
 * or not a ws/wss URL). Members this client does not know are ignored
 * (§2.5). Throws DiscoveryError for a body that is not a discovery answer.
 */
export function parseDiscovery(body) {
  if (!isObject(body)) throw new DiscoveryError("the answer is not a JSON object");
  if ("protocol" in body && body.protocol !== "confab.v1") {
    throw new DiscoveryError(`the server speaks ${JSON.stringify(body.protocol)}, not confab.v1`);
  }
  if (!Array.isArray(body.nodes)) throw new DiscoveryError("the answer has no list of nodes");
  return body.nodes.map((n, i) => {
    if (!isObject(n)) throw new DiscoveryError(`node ${i + 1} is not an object`);
    return { node: typeof n.node === "string" ? n.node : "", ws: wsUrl(n.ws) };
  });
}

/** The HTTP origin of a node from its WebSocket URL: ws://h:p/v1/ws -> http://h:p. */
export function httpBaseOf(url) {
  const u = new URL(url);
  const scheme = { "ws:": "http:", "wss:": "https:", "http:": "http:", "https:": "https:" }[u.protocol];
  if (!scheme) throw new TypeError(`not a ws/wss URL: ${url}`);
  return `${scheme}//${u.host}`;
}

/**
 * The /v1/discover URLs to ask, in order: the page's own origin, then the
 * node the client last used (when it is another origin the page may ask:
 * an https page may not fetch http://).
 */
export function discoveryUrls(pageOrigin, lastWsUrl = null) {
  const secure = pageOrigin.startsWith("https:");
  const bases = [pageOrigin.replace(/\/+$/, "")];
  if (lastWsUrl) {
    try {
      const base = httpBaseOf(lastWsUrl);
      if (!bases.includes(base) && (!secure || base.startsWith("https:"))) bases.push(base);
    } catch {
      // not a URL we can derive an origin from: only the page's own
    }
  }
  return bases.map((b) => `${b}/v1/discover`);
}

const sameUrl = (a, b) => !!a && !!b && wsUrl(a) === wsUrl(b);

/**
 * Picks where to connect from the listed nodes (see the rule at the top).
 * Returns {url, node, own, listed}: `own` when it is the page's own /v1/ws,
 * `node` the chosen (or single) node's name, `listed` how many nodes the
 * answer had.
 */
export function chooseEndpoint(nodes, { ownUrl, avoid = null }) {
  const listed = nodes.length;
  const own = { url: ownUrl, node: listed === 1 ? nodes[0].node : "", own: true, listed };
  if (listed < 2) return own;
  const secure = ownUrl.startsWith("wss:");
  const usable = nodes.filter((n) => n.ws && (!secure || n.ws.startsWith("wss:")));
  if (usable.length === 0) return own;
  const pick = usable.find((n) => !sameUrl(n.ws, avoid)) ?? usable[0];
  return { url: pick.ws, node: pick.node, own: sameUrl(pick.ws, ownUrl), listed };
}

/** One fetch of a discovery URL, within `ms`. Resolves with the nodes. */
async function fetchNodes(fetchFn, url, ms) {
  const controller = typeof AbortController === "function" ? new AbortController() : null;
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      controller?.abort();
      reject(new DiscoveryError(`${url} did not answer within ${ms} ms`));
    }, ms);
  });
  const ask = (async () => {
    let res;
    try {
      res = await fetchFn(url, { signal: controller?.signal, cache: "no-store", credentials: "omit", headers: { accept: "application/json" } });
    } catch (e) {
      throw new DiscoveryError(`${url}: ${e?.message ?? e}`);
    }
    if (!res || !res.ok) throw new DiscoveryError(`${url} answered HTTP ${res?.status ?? "?"}`);
    let body;
    try {
      body = await res.json();
    } catch {
      throw new DiscoveryError(`${url} did not answer JSON`);
    }
    return parseDiscovery(body);
  })();
  try {
    return await Promise.race([ask, timeout]);
  } finally {
    clearTimeout(timer);
    ask.catch(() => {}); // a late failure after the timeout is no one's business
  }
}

/**
 * Asks each URL in turn until one answers; all of them together within
 * `timeoutMs`. Resolves with {nodes, from}; rejects with a DiscoveryError
 * naming why the last one failed.
 */
export async function discover(fetchFn, urls, { timeoutMs = DISCOVERY_TIMEOUT_MS, now = () => Date.now() } = {}) {
  const deadline = now() + timeoutMs;
  let last = new DiscoveryError("nowhere to ask");
  for (const url of urls) {
    const left = deadline - now();
    if (left <= 0) break;
    try {
      return { nodes: await fetchNodes(fetchFn, url, left), from: url };
    } catch (e) {
      last = e instanceof DiscoveryError ? e : new DiscoveryError(String(e?.message ?? e));
    }
  }
  throw last;
}

/**
 * Where to connect now: asks discovery (the page's origin, then the node
 * last used) and applies the rule. Never rejects: on any failure it is the
 * page's own /v1/ws, with `error` saying why.
 * Returns {url, node, own, listed, error}.
 */
export async function pickEndpoint({ fetch: fetchFn, pageOrigin, ownUrl, last = null, avoid = null, timeoutMs = DISCOVERY_TIMEOUT_MS }) {
  try {
    const { nodes } = await discover(fetchFn, discoveryUrls(pageOrigin, last), { timeoutMs });
    return { ...chooseEndpoint(nodes, { ownUrl, avoid }), error: null };
  } catch (e) {
    return { url: ownUrl, node: "", own: true, listed: 0, error: e?.message ?? String(e) };
  }
}

/** The connection's place in words, for a tooltip: "node n2 (ws://…), 1 of 3 nodes". */
export function describeEndpoint(ep) {
  if (!ep) return "";
  if (ep.listed >= 2) return `Server node ${ep.node || "(unnamed)"} (${ep.url}), one of ${ep.listed} nodes`;
  const base = `This site's server (${ep.url})`;
  if (ep.error) return `${base}; discovery did not answer (${ep.error})`;
  return ep.node && ep.node !== "local" ? `${base}, node ${ep.node}` : base;
}
