#!/usr/bin/env python3
"""Browser test of Warden's web console (Playwright, sync API, Debian's
Chromium; no downloaded browsers).

    python3 tests/console/console_test.py BASE_URL TOKEN CA_PEM SCREENSHOT_DIR

BASE_URL   where the console is served (https://127.0.0.1:7080, or http://...)
TOKEN      a system-role token (the first admin token, data-dir/admin.token)
CA_PEM     the control plane's CA certificate, or - for plain http
SCREENSHOT_DIR  where the full-page screenshots go

It signs in with a wrong token (refused) and the right one, checks that a
`#token=` link does not switch a signed-in session unasked, submits a run
of the `hello` example agent from the console's form (a dry run first,
which must make no run), follows it to `succeeded` in the runs list and on
its page (output, logs, attempts), checks that markup in a run's input
and output shows as text, and visits the agents, nodes and usage pages and
both themes, saving a screenshot of each. Any script error, CSP refusal,
unexpected dialog, 5xx, or failed load other than the expected 401s of
/v1/whoami fails it. Exits non-zero with the failing step's message.

Against a control plane without auth (`warden dev`) a wrong token is
accepted, which fails the test unless CONSOLE_NO_AUTH=1: then the real
refusal check is skipped (said so in the output) and the refusal screen is
shown with a 401 the test itself answers. CONSOLE_DARK_SHOTS=1 also saves
every page in the dark theme (`*-dark.png`).
"""

import os
import re
import secrets
import socket
import json
import ssl
import sys
import urllib.parse
import urllib.request

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright

TIMEOUT_MS = 30_000
CHROMIUM = "/usr/bin/chromium"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PAGES = ["runs", "agents", "nodes", "usage"]
MARKUP = "<img src=x onerror=alert(1)>"
# Failed loads the console causes on purpose: (path, status) as Chromium logs them.
EXPECTED_FAILURES = {("/v1/whoami", 401)}  # a wrong token, and the no-token probe on the sign-in form


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def verify_tls(url, ca_pem):
    """The server's certificate must chain to CA_PEM and name the host."""
    context = ssl.create_default_context(cafile=ca_pem)
    port = url.port or 443
    try:
        with socket.create_connection((url.hostname, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=url.hostname):
                pass
    except (OSError, ssl.SSLError) as e:
        raise Failure(f"{url.hostname}:{port} does not present a certificate from {ca_pem}: {e}")


class ConsoleTest:
    def __init__(self, page, base, token, ca_pem, shots, no_auth):
        self.page = page
        self.base = base.rstrip("/")
        self.token = token
        self.tls = ssl.create_default_context(cafile=ca_pem) if base.startswith("https:") else None
        self.shots = shots
        self.no_auth = no_auth
        self.step_name = "start"
        self.problems = []  # CSP violations, script errors, unexpected failed loads and dialogs
        self.dialogs = []  # the messages of the dialogs answered
        self.dialog_answer = None  # None: no dialog is expected
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("response", self._response)
        page.on("dialog", self._dialog)

    def _console(self, message):
        text = message.text
        if "Failed to load resource" in text:
            path = urllib.parse.urlsplit(message.location.get("url", "")).path
            status = re.search(r"status of (\d+)", text)
            if status and (path, int(status.group(1))) in EXPECTED_FAILURES:
                return
            self.problems.append(f"failed load of {path or '?'}: {text}")
        elif "Content Security Policy" in text or message.type == "error":
            self.problems.append(f"console {message.type}: {text}")

    def _response(self, response):
        if response.status >= 500:
            self.problems.append(f"{response.status} from {response.request.method} {response.url}")

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        if self.dialog_answer is None:
            self.problems.append(f"unexpected {dialog.type} dialog: {dialog.message}")
        if self.dialog_answer:
            dialog.accept()
        else:
            dialog.dismiss()

    def api(self, path, body=None):
        """GET (or with `body`, POST JSON to) an API path straight from Python (TLS verified against CA_PEM)."""
        headers = {"authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        request = urllib.request.Request(f"{self.base}{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.tls) as answer:
                return json.load(answer)
        except OSError as e:
            raise Failure(f"{'POST' if data else 'GET'} {path}: {e}")

    def run_count(self):
        return len(self.api("/v1/runs?limit=1000")["runs"])

    def step(self, name):
        self.step_name = name
        print(f"-- {name}", flush=True)

    def shot(self, name):
        self.page.wait_for_timeout(300)  # let charts lay out and fonts settle
        path = os.path.join(self.shots, name)
        self.page.screenshot(path=path, full_page=True)
        print(f"   saved {path}", flush=True)

    def nav(self, key):
        self.page.locator(f'.nav-link[data-nav="{key}"]').click()
        expect(self.page).to_have_url(re.compile(rf"#/{key}(\?|$)"))

    # ---- sign-in ----------------------------------------------------------

    def sign_in_form(self):
        self.step("the sign-in form")
        page = self.page
        page.goto(f"{self.base}/")
        form_or_shell = page.locator(".signin-form, .topbar")
        expect(form_or_shell.first).to_be_visible()
        if page.locator(".topbar").count():
            check(self.no_auth, "the console signed in without any token: this server authenticates nobody "
                                "(run with CONSOLE_NO_AUTH=1 against warden dev)")
            print("   no auth: the console went straight in; signing out to reach the form")
            page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
        expect(page.locator("#token")).to_be_visible()
        expect(page.locator("#signin-error")).to_be_hidden()
        self.shot("signin.png")

    def wrong_token(self):
        self.step("a wrong token is refused")
        page = self.page
        wrong = "wrong-" + secrets.token_hex(12)
        page.locator("#token").fill(wrong)
        page.get_by_role("button", name="Sign in").click()
        error = page.locator("#signin-error")
        expect(error.or_(page.locator(".topbar")).first).to_be_visible()
        if page.locator(".topbar").count():
            check(self.no_auth, "a wrong token was accepted: the server does not check tokens "
                                "(run with CONSOLE_NO_AUTH=1 against warden dev)")
            print("   SKIPPED the real refusal check: CONSOLE_NO_AUTH=1 and this server authenticates nobody;"
                  " showing the refusal screen with a 401 this test answers instead")
            page.get_by_role("button", name="Sign out").click()
            page.route("**/v1/whoami", lambda route: route.fulfill(
                status=401, content_type="application/problem+json",
                body='{"type":"about:blank","title":"Unauthorized","status":401,'
                     '"detail":"the token is not valid","code":"unauthenticated"}')
                if route.request.headers.get("authorization") == f"Bearer {wrong}" else route.continue_())
            page.locator("#token").fill(wrong)
            page.get_by_role("button", name="Sign in").click()
        expect(error).to_be_visible()
        expect(error).to_have_text("That token was refused.")
        expect(page.locator(".topbar")).to_have_count(0)
        self.shot("signin-refused.png")
        page.unroute("**/v1/whoami")

    def right_token(self):
        self.step("sign in with the right token")
        page = self.page
        page.locator("#token").fill(self.token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".topbar")).to_be_visible()
        expect(page).to_have_url(re.compile(r"#/runs$"))
        for part in ("tenant", "role"):
            expect(page.locator(f".who-{part}"), f"the header shows no {part}").not_to_have_text(re.compile(r"^(—)?$"))
        tenant = page.locator(".who-tenant").inner_text()
        role = page.locator(".who-role").inner_text()
        check(tenant not in ("", "—") and role not in ("", "—"), f"the header shows tenant {tenant!r}, role {role!r}")
        print(f"   signed in: tenant {tenant}, role {role}")

    def token_link(self):
        self.step("a #token= link asks before switching a signed-in session, and a cancel keeps it")
        page = self.page
        tenant = page.locator(".who-tenant").inner_text()
        linked = "linked-" + secrets.token_hex(12)
        # The link's token is someone else's: whoami says so (answered by this test).
        page.route("**/v1/whoami", lambda route: route.fulfill(
            status=200, content_type="application/json",
            body='{"tenant":"attacker","role":"admin","token_id":"tok-attacker"}')
            if route.request.headers.get("authorization") == f"Bearer {linked}" else route.continue_())
        self.dialogs.clear()
        self.dialog_answer = False
        try:
            page.evaluate("(t) => { location.hash = '#token=' + t; }", linked)
            expect(page).to_have_url(re.compile(r"#/runs$"))  # the token is out of the address bar
            for _ in range(100):
                if self.dialogs:
                    break
                page.wait_for_timeout(100)
        finally:
            self.dialog_answer = None
            page.unroute("**/v1/whoami")
        check(self.dialogs, "a #token= link switched nothing but asked nothing either")
        check(self.dialogs[0].startswith("Sign in as attacker (admin)?"), f"the link's dialog said: {self.dialogs[0]!r}")
        check(linked not in page.url, f"the token stayed in the address bar: {page.url}")
        expect(page.locator(".who-tenant")).to_have_text(tenant)
        check(page.evaluate("sessionStorage.getItem('warden.token')") == self.token,
              "the session's token changed after the link's dialog was cancelled")
        expect(page.locator("tr[data-run], .empty").first).to_be_visible()
        print(f"   asked {self.dialogs[0].splitlines()[0]!r}; cancelled: still signed in to {tenant}")

    # ---- runs -------------------------------------------------------------

    def submit_run(self):
        self.step("submit a run of hello from the console")
        page = self.page
        page.locator("button", has_text="Submit run").first.click()
        panel = page.locator("#submit-panel")
        expect(panel).to_be_visible()
        page.locator("#submit-agent").fill("hello")
        runs_before = self.run_count()
        page.locator("#submit-input").fill('{"name": console}')
        expect(page.locator("#submit-input-note")).to_contain_text("Not valid JSON")
        page.locator("#submit-go").click()
        expect(page.locator("#submit-result")).to_contain_text("Fix the input")
        expect(page).to_have_url(re.compile(r"#/runs$"))

        page.locator("#submit-input").fill('{"name": "console"}')
        expect(page.locator("#submit-input-note")).to_have_text("Valid JSON.")
        page.locator("#submit-labels").fill("source=console-test")
        page.locator("#submit-dry").click()
        expect(page.locator("#dry-run-result")).to_contain_text("Dry run passed")
        runs_after = self.run_count()
        check(runs_after == runs_before, f"the refused submit and the dry run made runs: {runs_before} before, {runs_after} after")

        page.locator("#submit-go").click()
        expect(page).to_have_url(re.compile(r"#/runs/[0-9a-f]{16,}$"))
        run_id = page.url.rsplit("/", 1)[1]
        print(f"   submitted run {run_id}")
        return run_id

    def runs_list(self, run_id):
        self.step("the run appears in the runs list and succeeds")
        page = self.page
        self.nav("runs")
        row = page.locator(f'tr[data-run="{run_id}"]')
        expect(row).to_be_visible()
        expect(row.locator('[data-col="agent"]')).to_contain_text("hello@")
        expect(row.locator('[data-col="state"] .badge')).to_have_attribute("data-state", "succeeded")
        expect(row.locator('[data-col="attempts"]')).to_have_text(re.compile(r"^\d+/\d+$"))
        expect(row.locator("a")).to_have_attribute("title", run_id)
        self.shot("runs.png")

    def run_page(self, run_id):
        self.step("its page: state, output, attempts and logs")
        page = self.page
        page.locator(f'tr[data-run="{run_id}"] a').click()
        expect(page).to_have_url(re.compile(rf"#/runs/{run_id}$"))
        expect(page.locator(".run-id")).to_have_text(run_id)
        expect(page.locator(".page-header .badge")).to_have_attribute("data-state", "succeeded")
        expect(page.locator("#run-output")).to_contain_text('"greeting"')
        expect(page.locator("#run-output")).to_contain_text('"hello, console"')
        expect(page.locator(".fact", has_text="Labels")).to_contain_text("console-test")
        expect(page.locator(".timeline rect.bar"), "the attempts timeline has no bar").not_to_have_count(0)
        expect(page.locator("#cancel-run")).to_have_count(0)
        # The log of an ended run, followed live, must come to its end (not
        # stop on an error) and hold every line the API has.
        expect(page.locator("#log-status")).to_have_text("Complete")
        expect(page.locator("#log-status")).to_have_attribute("data-status", "ended")
        lines = self.api(f"/v1/runs/{run_id}/logs")["lines"]
        shown = page.locator("#log .log-line")
        expect(shown).to_have_count(len(lines))
        if lines:
            expect(shown.last).to_contain_text(lines[-1]["message"][:60])
        else:
            expect(page.locator("#log")).to_contain_text("This run wrote no log lines.")
        print(f"   output shown; log complete with {len(lines)} line(s), as the API has")
        self.shot("run.png")

    def markup_as_text(self):
        self.step("markup in a run's input and output shows as text")
        page = self.page
        # (A label value cannot hold markup: the API takes only letters, digits, '.', '_' and '-'.)
        run = self.api("/v1/runs", {"agent": "hello", "input": {"name": MARKUP}, "labels": {"source": "console-markup"}})
        run_id = run["run_id"]
        page.goto(f"{self.base}/#/runs/{run_id}")
        expect(page.locator(".run-id")).to_have_text(run_id)
        expect(page.locator(".json-card", has_text="Input")).to_contain_text(MARKUP)
        expect(page.locator("#run-output")).to_contain_text(f"hello, {MARKUP}")
        expect(page.locator("main img"), "markup from the API became an element").to_have_count(0)
        print(f"   {MARKUP} shown as text in the input and output; no img in the page")
        self.shot("run-markup.png")

    # ---- agents, nodes, usage ---------------------------------------------------

    def agents(self):
        self.step("the agents page and hello's page")
        page = self.page
        self.nav("agents")
        row = page.locator('tr[data-agent="hello"]')
        expect(row).to_be_visible()
        expect(row.locator('[data-col="versions"]')).to_have_text(re.compile(r"^\d+$"))
        self.shot("agents.png")
        row.locator("a").click()
        expect(page).to_have_url(re.compile(r"#/agents/hello"))
        expect(page.get_by_role("heading", level=1)).to_have_text("hello")
        versions = page.locator("details.version")
        expect(versions.first).to_be_visible()
        expect(versions.first.locator("summary")).to_contain_text("hello@")
        # hello is published with examples/hello/warden.toml, which has a [tool] section.
        expect(versions.first.locator("pre.manifest")).to_contain_text("[tool]")
        self.shot("agent.png")

    def nodes(self):
        self.step("the nodes page")
        page = self.page
        self.nav("nodes")
        expect(page.locator("tr[data-node], .empty").first).to_be_visible()
        expect(page.locator(".empty-title", has_text="system role"),
               "the nodes page says the token is not of the system role: give a system token").to_have_count(0)
        row = page.locator("tr[data-node]").first
        expect(row.locator(".badge")).to_have_attribute("data-state", re.compile(r"^(ready|draining|lost|gone)$"))
        expect(row.locator(".slot-text")).to_have_text(re.compile(r"^\d+ used · \d+ free$"))
        expect(row.locator("svg.slot-bar rect"), "the slots bar is not drawn").not_to_have_count(0)
        expect(row).to_contain_text(re.compile(r"\d+(\.\d)? (s|ms|min) ago"))
        self.shot("nodes.png")

    def usage(self):
        self.step("the usage page's charts")
        page = self.page
        self.nav("usage")
        bars = page.locator("#chart-runs svg rect.bar")
        expect(bars, "the runs-per-minute chart has no bar").not_to_have_count(0)
        expect(bars.first.locator("title")).to_contain_text(re.compile(r"\d+ runs?"))
        expect(page.locator("#chart-runs .tick-label").nth(2), "the runs chart has no axis labels").to_be_attached()
        expect(page.locator("#chart-runs .legend")).to_contain_text("succeeded")
        expect(page.locator("#chart-usage svg")).to_be_visible()
        expect(page.locator(".stat", has_text="Runs, last hour").locator(".stat-value")).not_to_have_text("0")
        expect(page.locator(".usage-table tfoot")).to_contain_text("Total")
        self.shot("usage.png")

    def theme(self):
        self.step("dark and light themes")
        page = self.page
        self.nav("runs")
        root = page.locator("html")
        expect(root).to_have_attribute("data-theme", "light")
        light_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.locator("[data-theme-toggle]").first.click()
        expect(root).to_have_attribute("data-theme", "dark")
        dark_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        check(light_bg != dark_bg, f"the background stayed {light_bg} in the dark theme")
        expect(page.locator("tr[data-run]").first).to_be_visible()
        self.shot("runs-dark.png")
        page.reload()
        expect(page.locator(".topbar")).to_be_visible()
        expect(root).to_have_attribute("data-theme", "dark")  # remembered
        if os.environ.get("CONSOLE_DARK_SHOTS") == "1":
            for key in PAGES[1:]:
                self.nav(key)
                self.page.wait_for_timeout(800)
                self.shot(f"{key}-dark.png")
            self.nav("runs")
            page.locator("tr[data-run] a").first.click()
            expect(page.locator("#log-status")).to_have_attribute("data-status", re.compile("ended|live"))
            self.shot("run-dark.png")
        page.locator("[data-theme-toggle]").first.click()
        expect(root).to_have_attribute("data-theme", "light")

    def no_page_problems(self):
        self.step("no CSP violations or script errors")
        check(not self.problems, "the page reported:\n  " + "\n  ".join(self.problems))


def main(argv):
    if len(argv) != 5:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    base, token, ca_pem, shots = argv[1:]
    no_auth = os.environ.get("CONSOLE_NO_AUTH") == "1"
    os.makedirs(shots, exist_ok=True)
    url = urllib.parse.urlsplit(base)
    args = ["--no-sandbox"]
    if url.scheme == "https":
        if ca_pem == "-":
            print("FAIL: an https BASE_URL needs CA_PEM", file=sys.stderr)
            return 2
        if url.hostname not in LOOPBACK:
            print("FAIL: this test trusts a CA only for a loopback control plane", file=sys.stderr)
            return 2
        try:
            verify_tls(url, ca_pem)
        except Failure as e:
            print(f"FAIL: {e}", file=sys.stderr)
            return 1
        # Chromium takes no extra CA file without an NSS profile database.
        # The certificate was just verified against CA_PEM above and the
        # control plane is on loopback, so this test's throwaway browser may
        # skip its own check; never do this for any other host.
        args.append("--ignore-certificate-errors")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        test = ConsoleTest(page, base, token, ca_pem, shots, no_auth)
        try:
            test.sign_in_form()
            test.wrong_token()
            test.right_token()
            test.token_link()
            run_id = test.submit_run()
            test.runs_list(run_id)
            test.run_page(run_id)
            test.markup_as_text()
            test.agents()
            test.nodes()
            test.usage()
            test.theme()
            test.no_page_problems()
        except (Failure, AssertionError, PlaywrightError) as e:
            message = str(e).strip().split("\nCall log:")[0]
            print(f"FAIL [{test.step_name}]: {message}", file=sys.stderr)
            if test.problems:
                print("page problems:\n  " + "\n  ".join(test.problems), file=sys.stderr)
            try:
                page.screenshot(path=os.path.join(shots, "failure.png"), full_page=True)
                print(f"   the page as it was: {os.path.join(shots, 'failure.png')}", file=sys.stderr)
            except PlaywrightError:
                pass
            return 1
        finally:
            browser.close()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
