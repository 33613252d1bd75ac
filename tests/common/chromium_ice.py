#!/usr/bin/python3
"""Headless Chromium gathers ICE candidates, as a softphone page would, and prints them as JSON.

Used by tests/firewall.rs as the ground truth for egress-probe's `ice` probe. Run it inside the
client network namespace (`ip netns exec NS /usr/bin/python3 chromium_ice.py SPEC.json`).

SPEC.json: {"ice_servers": [RTCIceServer...], "policies": ["all", "relay"], "gather_ms": 4000,
            "user_data_dir": DIR, "home": DIR,
            optional: "proxy": "http://HOST:PORT", "proxy_auth": [USER, PASSWORD], "warm_url": URL}

With `proxy`, Chromium sends everything through that HTTP proxy (WebRTC uses it for TURN over
TCP/TLS). With `proxy_auth`, the page first loads `warm_url` and answers the proxy's 407 with
the credentials, as a user answers the browser's prompt; WebRTC then reuses them.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: requests on
fd 3, answers on fd 4, NUL-separated JSON), so no port is opened and no third-party Python
module is needed. Chromium runs in its own process group, which is killed on every path (and
the calling test kills every process left in its namespaces as a last resort).
Output (stdout): {"version": "...", "gathers": {"all": {...}, "relay": {...}}}; each gather has
`complete`, `candidates` [{type, protocol, relayProtocol, url, ms}], `errors`.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

GATHER_JS = r"""
(async (servers, policies, ms) => {
  async function gather(policy) {
    const pc = new RTCPeerConnection({iceServers: servers, iceTransportPolicy: policy});
    const t0 = performance.now();
    const candidates = [], errors = [];
    pc.onicecandidateerror = e => errors.push({url: e.url, code: e.errorCode, text: e.errorText});
    const complete = await new Promise(async resolve => {
      pc.onicecandidate = e => {
        if (!e.candidate) { resolve(true); return; }
        const c = e.candidate;
        candidates.push({type: c.type, protocol: c.protocol, relayProtocol: c.relayProtocol || null,
                         url: e.url || c.url || null, ms: Math.round(performance.now() - t0)});
      };
      setTimeout(() => resolve(false), ms);
      pc.createDataChannel('probe');
      await pc.setLocalDescription(await pc.createOffer());
    });
    pc.close();
    return {policy, complete, candidates, errors};
  }
  const out = {};
  for (const r of await Promise.all(policies.map(gather))) out[r.policy] = r;
  return JSON.stringify(out);
})
"""


class Pipe:
    def __init__(self, to_chrome, from_chrome):
        self.w = to_chrome
        self.r = from_chrome
        self.buf = b""
        self.next_id = 0

    def send(self, method, params=None, session=None):
        """Sends a command without waiting for its answer."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")

    def events(self, timeout):
        """Events that arrive within `timeout` (answers to `send` are dropped)."""
        ready, _, _ = select.select([self.r], [], [], timeout)
        if ready:
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buf += chunk
        out = []
        while b"\0" in self.buf:
            raw, self.buf = self.buf.split(b"\0", 1)
            msg = json.loads(raw)
            if "method" in msg and "id" not in msg:
                out.append(msg)
        return out

    def call(self, method, params=None, session=None, timeout=10.0):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: no answer in {timeout} s")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"{method}: Chromium closed the pipe")
                self.buf += chunk


def proxy_login(pipe, session, spec):
    """Loads warm_url, answering the proxy's 407 with the credentials; True once answered."""
    user, password = spec["proxy_auth"]
    pipe.call("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]}, session=session)
    pipe.send("Page.navigate", {"url": spec["warm_url"]}, session=session)
    answered = False
    end = time.monotonic() + 5
    while time.monotonic() < end and not answered:
        for ev in pipe.events(0.2):
            params = ev.get("params", {})
            if ev["method"] == "Fetch.requestPaused":
                pipe.send("Fetch.continueRequest", {"requestId": params["requestId"]}, session=session)
            elif ev["method"] == "Fetch.authRequired":
                pipe.send("Fetch.continueWithAuth", {
                    "requestId": params["requestId"],
                    "authChallengeResponse": {"response": "ProvideCredentials", "username": user, "password": password},
                }, session=session)
                answered = True
    # Let the authenticated request go through (it fills the proxy auth cache), then stop.
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        for ev in pipe.events(0.1):
            if ev["method"] == "Fetch.requestPaused":
                pipe.send("Fetch.continueRequest", {"requestId": ev["params"]["requestId"]}, session=session)
    pipe.call("Fetch.disable", session=session)
    return answered


def main():
    # `timeout` (or the test) sends SIGTERM: leave through `finally`, which kills Chromium.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spec = json.load(open(sys.argv[1]))
    home = spec["home"]
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def child_fds():
        os.dup2(to_r, 3)
        os.dup2(from_w, 4)

    env = dict(os.environ, HOME=home)
    chrome = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-dev-shm-usage", "--remote-debugging-pipe",
         f"--user-data-dir={spec['user_data_dir']}"]
        + ([f"--proxy-server={spec['proxy']}"] if spec.get("proxy") else [])
        + ["about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(os.path.join(home, "chromium.log"), "w"),
        preexec_fn=child_fds, pass_fds=(3, 4), env=env, start_new_session=True)
    os.close(to_r)
    os.close(from_w)
    pipe = Pipe(to_w, from_r)
    try:
        version = pipe.call("Browser.getVersion", timeout=20).get("product", "")
        targets = pipe.call("Target.getTargets")["targetInfos"]
        page = next((t["targetId"] for t in targets if t["type"] == "page"), None)
        if page is None:
            page = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": page, "flatten": True})["sessionId"]
        if spec.get("proxy_auth"):
            print(json.dumps({"proxy_auth": proxy_login(pipe, session, spec)}), file=sys.stderr)
        expr = "%s(%s, %s, %d)" % (GATHER_JS, json.dumps(spec["ice_servers"]), json.dumps(spec["policies"]),
                                    int(spec["gather_ms"]))
        res = pipe.call("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True},
                        session=session, timeout=spec["gather_ms"] / 1000.0 + 10)
        if "exceptionDetails" in res:
            raise RuntimeError(f"gather script: {res['exceptionDetails']}")
        print(json.dumps({"version": version, "gathers": json.loads(res["result"]["value"])}))
    finally:
        # Browser.close lets Chromium end its renderer/zygote processes too; then the group.
        try:
            pipe.call("Browser.close", timeout=2)
            chrome.wait(timeout=2)
        except Exception:
            pass
        try:
            os.killpg(chrome.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        chrome.wait(timeout=5)


if __name__ == "__main__":
    main()
