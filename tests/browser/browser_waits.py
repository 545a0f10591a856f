"""Waits of the browser tests: each on a signal of the app, never on a fixed time.

The explorer's side panel carries the class ``te-idle`` when no job is queued or running
in its kernel and ``te-busy`` while one is (``PanelView._busy``); the status line, the
label counts and the map's layers say what the last action did.  A step clicks, then
waits until the app shows the outcome *and* is idle.

A timeout only bounds how long a broken run takes to fail.  It is generous and grows
with the machine's load (the CI box has two shared cores); ``TESSERA_EXPLORE_BROWSER_SLOW``
multiplies it further.  A wait that times out raises ``AssertionError`` naming the step,
what was awaited and what the app showed then (status line, error line, busy or idle,
label counts).
"""

from __future__ import annotations

import json
import os
import time

#: JavaScript: the explorer's panel shows that no job is queued or running
IDLE = "document.querySelector('.te-panel.te-idle') !== null"

#: JavaScript: what the app shows, for failure messages
_SCREEN = """() => {
  const text = css => { const e = document.querySelector(css); return e ? e.innerText.trim() : null; };
  const panel = document.querySelector('.te-panel');
  return {status: text('.te-status'), error: text('.te-error'), counts: text('.te-counts'),
          state: panel ? (panel.classList.contains('te-idle') ? 'idle' : 'busy') : 'no panel yet',
          layers: document.querySelectorAll('.te-map .leaflet-image-layer').length};
}"""


#: JavaScript: what is wrong with the layout now (a list of sentences; empty when all is well):
#: every visible button, dropdown, slider and text field of the panel lies inside the
#: viewport and the panel, no button's text is cut ("r…"), the panel does not scroll
#: sideways, and the map's status line is shown inside the map
LAYOUT_PROBLEMS = """() => {
  const vw = document.documentElement.clientWidth, bad = [], px = v => Math.round(v);
  const panel = document.querySelector('.te-panel'), map = document.querySelector('.te-map');
  if (!panel || !map) return ['no panel or map yet'];
  const name = e => (e.innerText || e.value || e.className || e.tagName).toString().trim().slice(0, 40);
  if (panel.scrollWidth > panel.clientWidth + 1)
    bad.push(`the panel scrolls sideways (${panel.scrollWidth} > ${panel.clientWidth} px)`);
  const p = panel.getBoundingClientRect(), m = map.getBoundingClientRect();
  if (p.right > vw + 1) bad.push(`the panel ends at ${px(p.right)} px, past the viewport's ${vw} px`);
  if (m.width < 290) bad.push(`the map is ${px(m.width)} px wide`);
  const controls = panel.querySelectorAll('button, select, input, .widget-slider, .jupyter-widget-slider');
  let seen = 0;
  for (const e of controls) {
    const r = e.getBoundingClientRect();
    if (!e.offsetParent || r.width === 0) continue;  // in a closed section
    seen++;
    if (r.left < p.left - 1 || r.right > p.right + 1 || r.right > vw + 1)
      bad.push(`'${name(e)}' (${px(r.left)}-${px(r.right)} px) is outside the panel ` +
               `(${px(p.left)}-${px(p.right)}) or the viewport (${vw})`);
    if (e.tagName === 'BUTTON' && e.scrollWidth > e.clientWidth + 1)
      bad.push(`the button '${name(e)}' is cut (${e.scrollWidth} > ${e.clientWidth} px)`);
  }
  if (seen < 15) bad.push(`only ${seen} panel controls are shown`);
  const st = document.querySelector('.te-map .te-map-status');
  if (!st) bad.push('no status line on the map');
  else {
    const r = st.getBoundingClientRect();
    const inside = r.left >= m.left - 1 && r.right <= m.right + 1 && r.top >= m.top - 1 && r.bottom <= m.bottom + 1;
    if (r.width === 0 || r.height === 0 || !inside)
      bad.push(`the map's status line is not shown inside the map (${JSON.stringify(r)})`);
  }
  return bad;
}"""

#: the folder of the layout screenshots (git-ignored)
SCREENSHOTS = os.path.join(os.path.dirname(__file__), "screenshots")


def scale() -> float:
    """How much longer than on an idle machine things may take now: the load per core
    (at least 1, at most 4) times ``TESSERA_EXPLORE_BROWSER_SLOW`` (default 1)."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 1.0
    return min(max(load, 1.0), 4.0) * float(os.environ.get("TESSERA_EXPLORE_BROWSER_SLOW", "1"))


def screen(page) -> str:
    """What the app shows now, in words (for failure messages)."""
    try:  # through wait_for_function for its timeout (a hung page must not hang the report)
        s = page.wait_for_function(_SCREEN, timeout=10_000).json_value()
    except Exception as err:  # the page may be gone or hung: say so instead of hiding the first failure
        return f"the page could not be read ({type(err).__name__}: {err})"
    return (f"the app was {s['state']}; the status line said {s['status']!r}; the error line said "
            f"{s['error']!r}; label counts {s['counts']!r}; {s['layers']} map image layers")


def wait_for(page, step: str, predicate: str, what: str, *, timeout: float = 120.0, arg=None) -> None:
    """Wait until the JavaScript expression (or function of ``arg``) ``predicate`` is true,
    at most ``timeout`` seconds times :func:`scale`; else an AssertionError naming ``step``,
    ``what`` was awaited and what the app showed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t = timeout * scale()
    t0 = time.monotonic()
    try:
        page.wait_for_function(predicate, arg=arg, timeout=t * 1000, polling=100)
    except PlaywrightTimeout:
        raise AssertionError(f"step {step!r}: waited {time.monotonic() - t0:.0f} s (limit {t:.0f} s) for "
                             f"{what}; {screen(page)}") from None


def wait_for_element(page, step: str, css: str, what: str, *, timeout: float = 120.0) -> None:
    """:func:`wait_for` an element matching ``css``, found through Playwright's selectors
    (which, unlike ``document.querySelector``, see into open shadow roots: BokehJS draws
    its canvases there)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t = timeout * scale()
    t0 = time.monotonic()
    try:
        page.locator(css).first.wait_for(state="attached", timeout=t * 1000)
    except PlaywrightTimeout:
        raise AssertionError(f"step {step!r}: waited {time.monotonic() - t0:.0f} s (limit {t:.0f} s) for "
                             f"{what} ({css}); {screen(page)}") from None


def wait_idle(page, step: str, predicate: str, what: str, *, timeout: float = 120.0) -> None:
    """:func:`wait_for` the JavaScript expression ``predicate`` and the app idle (no job
    queued or running), both at once.  ``predicate`` must become true only through a
    message the kernel sends after it queued the step's jobs (so the idle seen is not the
    one from before the step): the status line of the step, not the label counts alone."""
    wait_for(page, step, f"({predicate}) && {IDLE}", f"{what}, with the app idle", timeout=timeout)


def status_has(*texts: str) -> str:
    """JavaScript: the status line holds one of ``texts``."""
    return "[" + ", ".join(json.dumps(t) for t in texts) + \
        "].some(t => (document.querySelector('.te-status')?.innerText || '').includes(t))"


def total_labels(n: int) -> str:
    """JavaScript: the panel's label counts of all classes add up to ``n``."""
    return ("(document.querySelector('.te-counts')?.innerText || '').split('\\n')"
            f".reduce((s, l) => s + Number((l.match(/: (\\d+)\\s*$/) || [0, 0])[1]), 0) === {n}")


def poll(step: str, check, what: str, *, timeout: float = 60.0, every: float = 0.3):
    """Call ``check()`` until it returns a true value (returned), at most ``timeout``
    seconds times :func:`scale`; else an AssertionError naming ``step`` and ``what``
    (with the last value ``check`` gave).  For signals only Python sees (a screenshot)."""
    t = timeout * scale()
    deadline = time.monotonic() + t
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"step {step!r}: waited {t:.0f} s for {what}; the last check gave {last!r}")
        time.sleep(every)
