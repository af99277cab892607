// A dedicated worker that posts a message every `ms` milliseconds. The
// session's heartbeat (client.js) ticks on it because browsers throttle the
// timers of hidden pages (down to one wake-up a minute), which would let the
// server's 2.5-interval heartbeat deadline pass; worker messages are not
// timers of the page.
let timer = null;
self.onmessage = (ev) => {
  clearInterval(timer);
  const ms = Number(ev.data?.ms);
  if (ms > 0) timer = setInterval(() => self.postMessage("tick"), ms);
};
