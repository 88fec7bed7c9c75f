// Warden's web console: sign-in, the page shell (header, navigation,
// banners, theme) and the hash router. Each page lives in its own module
// and renders into the shell's <main> with a context (see `context`).

import * as api from './api.js';
import { h, s, replace } from './ui.js';
import { runsPage } from './runs.js';
import { runPage } from './run.js';
import { agentsPage, agentPage } from './agents.js';
import { nodesPage } from './nodes.js';
import { usagePage } from './usage.js';

const TOKEN_KEY = 'warden.token';
const THEME_KEY = 'warden.theme';
// Set when the user signs out of a control plane that needs no token, so
// the console shows the sign-in form instead of walking straight back in.
const SIGNED_OUT_KEY = 'warden.signedOut';

const ROUTES = [
  { path: /^\/runs$/, nav: 'runs', page: runsPage },
  { path: /^\/runs\/([^/]+)$/, nav: 'runs', page: runPage },
  { path: /^\/agents$/, nav: 'agents', page: agentsPage },
  { path: /^\/agents\/([^/]+)$/, nav: 'agents', page: agentPage },
  { path: /^\/nodes$/, nav: 'nodes', page: nodesPage },
  { path: /^\/usage$/, nav: 'usage', page: usagePage },
];

const NAV = [['runs', 'Runs'], ['agents', 'Agents'], ['nodes', 'Nodes'], ['usage', 'Usage']];

const app = document.getElementById('app');
let session = null; // {token, who: {tenant, role, token_id}}
let current = null; // {controller} of the page on screen

// ---- theme ----------------------------------------------------------------

function preferredTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  if (saved === 'dark' || saved === 'light') return saved;
  return window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  for (const btn of document.querySelectorAll('[data-theme-toggle]')) {
    btn.setAttribute('aria-label', theme === 'dark' ? 'Switch to light theme' : 'Switch to dark theme');
    btn.title = btn.getAttribute('aria-label');
  }
}

function toggleTheme() {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
}

function themeButton() {
  return h('button', { type: 'button', class: 'icon-btn', 'data-theme-toggle': '', onclick: toggleTheme },
    icon('moon', 'icon-moon'), icon('sun', 'icon-sun'));
}

/** The theme toggle's icons (both drawn; CSS shows the one that applies). */
function icon(name, cls) {
  const paths = {
    moon: 'M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z',
    sun: 'M12 7a5 5 0 1 0 0 10 5 5 0 0 0 0-10zm0-5v2m0 16v2M4.2 4.2l1.4 1.4m12.8 12.8 1.4 1.4M2 12h2m16 0h2M4.2 19.8l1.4-1.4M18.4 5.6l1.4-1.4',
  };
  return s('svg', { viewBox: '0 0 24 24', class: `icon ${cls}`, 'aria-hidden': 'true' }, s('path', { d: paths[name] }));
}

// ---- sign-in ----------------------------------------------------------------

function logo() {
  return h('span', { class: 'logo' }, h('img', { src: '/console/favicon.svg', alt: '', width: 24, height: 24 }),
    h('span', { class: 'logo-text' }, 'Warden'));
}

function showSignIn(message) {
  stopPage();
  session = null;
  api.configure({ bearer: null });
  document.title = 'Sign in · Warden';
  const input = h('input', {
    id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
    placeholder: 'Paste an API token', 'aria-describedby': 'signin-error',
  });
  const error = h('p', { id: 'signin-error', class: 'form-error', role: 'alert' }, message || '');
  error.hidden = !message;
  const button = h('button', { type: 'submit', class: 'btn btn-primary btn-block' }, 'Sign in');
  const form = h('form', { class: 'signin-form', novalidate: true },
    h('label', { for: 'token' }, 'API token'), input, error, button);
  const anonymous = h('p', { class: 'signin-alt' });
  anonymous.hidden = true;

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) {
      formError('Enter a token.');
      return;
    }
    button.disabled = true;
    button.textContent = 'Checking…';
    try {
      const who = await api.whoami(token);
      signIn(token, who);
    } catch (err) {
      formError(err.status === 401 ? 'That token was refused.' : err.detail);
      input.select();
    } finally {
      button.disabled = false;
      button.textContent = 'Sign in';
    }
  });
  function formError(text) {
    error.textContent = text;
    error.hidden = false;
  }

  replace(app, h('div', { class: 'signin' },
    h('div', { class: 'signin-card' },
      logo(),
      h('h1', {}, 'Sign in to the console'),
      h('p', { class: 'muted' }, 'Runs, agents, nodes and usage of this Warden control plane.'),
      form,
      anonymous,
      h('p', { class: 'signin-hint' }, 'Make a token with ', h('code', {}, 'warden tokens create --role viewer'),
        ', or use the first admin token in the control plane’s data dir (', h('code', {}, 'admin.token'), ').')),
    h('div', { class: 'signin-theme' }, themeButton())));
  applyTheme(document.documentElement.dataset.theme);
  input.focus();

  // A control plane without auth answers whoami without a token: offer it.
  api.whoami(null).then((who) => {
    replace(anonymous, 'This control plane does not ask for a token. ',
      h('button', { type: 'button', class: 'btn-link', onclick: () => signIn(null, who) }, 'Continue without one'));
    anonymous.hidden = false;
  }, () => {});
}

function signIn(token, who) {
  session = { token, who };
  sessionStorage.removeItem(SIGNED_OUT_KEY);
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  api.configure({
    bearer: token,
    unauthorized: () => { if (session) signOut('Your token was refused. Sign in again.'); },
  });
  renderShell();
  if (!location.hash || location.hash === '#' || location.hash === '#/') location.replace('#/runs');
  else route();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.setItem(SIGNED_OUT_KEY, '1');
  showSignIn(message);
}

// ---- the shell ----------------------------------------------------------------

let main;
let banners;

function renderShell() {
  const who = session.who || {};
  main = h('main', { id: 'main', class: 'main', tabindex: '-1' });
  banners = h('div', { class: 'banners', 'aria-live': 'polite' });
  replace(app,
    h('header', { class: 'topbar' },
      h('div', { class: 'topbar-inner' },
        h('a', { href: '#/runs', class: 'brand' }, logo()),
        h('nav', { class: 'nav', 'aria-label': 'Main' },
          NAV.map(([key, label]) => h('a', { href: `#/${key}`, class: 'nav-link', 'data-nav': key }, label))),
        h('div', { class: 'topbar-right' },
          h('span', { class: 'who', title: who.token_id ? `token ${who.token_id}` : 'no token: this control plane does not authenticate' },
            h('span', { class: 'who-tenant' }, who.tenant || '—'),
            h('span', { class: 'who-role' }, who.role || '—')),
          themeButton(),
          h('button', { type: 'button', class: 'btn btn-ghost btn-sm', onclick: () => signOut() }, 'Sign out')))),
    h('div', { class: 'page' }, banners, main));
  applyTheme(document.documentElement.dataset.theme);
}

/** Shows an API error (or any error) in a dismissable banner above the page. */
function showError(err) {
  if (!banners || err?.name === 'AbortError') return;
  const text = err?.detail || err?.message || String(err);
  const existing = [...banners.children].find((b) => b.dataset.text === text);
  if (existing) {
    const n = Number(existing.dataset.count || 1) + 1;
    existing.dataset.count = n;
    existing.querySelector('.banner-count').textContent = `×${n}`;
    return;
  }
  const title = err?.status ? `${err.title || 'Error'} (${err.status}${err.code ? ` · ${err.code}` : ''})` : 'Error';
  const banner = h('div', { class: 'banner banner-error', role: 'alert', dataset: { text } },
    h('div', { class: 'banner-body' }, h('strong', {}, title), h('span', {}, text), h('span', { class: 'banner-count' })),
    h('button', { type: 'button', class: 'icon-btn banner-close', 'aria-label': 'Dismiss', onclick: () => banner.remove() }, '×'));
  banners.appendChild(banner);
}

// ---- routing --------------------------------------------------------------------

function stopPage() {
  if (current) current.controller.abort();
  current = null;
}

/** The hash as a path and its query: `#/runs?state=failed`. */
function currentRoute() {
  const raw = location.hash.replace(/^#/, '') || '/runs';
  const [path, query = ''] = raw.split('?');
  return { path, params: new URLSearchParams(query) };
}

/** Rewrites the hash's query without rendering the page again. */
function setParams(params) {
  const { path } = currentRoute();
  const qs = new URLSearchParams(Object.entries(params).filter(([, v]) => v)).toString();
  history.replaceState(null, '', `#${path}${qs ? `?${qs}` : ''}`);
}

/**
 * What a page gets: where to draw, a signal that aborts when the user leaves,
 * and helpers for errors, navigation and polling.
 */
function context(controller, params) {
  const signal = controller.signal;
  return {
    main,
    signal,
    params,
    who: session.who,
    setParams,
    error: showError,
    clearErrors: () => banners.replaceChildren(),
    title: (text) => { document.title = `${text} · Warden`; },
    go: (hash) => { location.hash = hash; },
    /**
     * Calls fn now and then every `ms` while the page is shown and the tab
     * visible, until fn returns false.
     */
    every(ms, fn) {
      let timer = null;
      let done = false;
      const tick = async () => {
        timer = null;
        if (signal.aborted || done) return;
        if (document.visibilityState === 'visible') {
          try { done = (await fn()) === false; } catch (e) { showError(e); }
        }
        if (!signal.aborted && !done) timer = setTimeout(tick, ms);
      };
      // Coming back to the tab polls at once.
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible' && timer) { clearTimeout(timer); tick(); }
      }, { signal });
      signal.addEventListener('abort', () => { if (timer) clearTimeout(timer); });
      tick();
    },
  };
}

function route() {
  if (!session) return;
  const { path, params } = currentRoute();
  const match = ROUTES.map((r) => [r, r.path.exec(path)]).find(([, m]) => m);
  if (!match) {
    location.replace('#/runs');
    return;
  }
  const [r, m] = match;
  stopPage();
  const controller = new AbortController();
  current = { controller };
  banners.replaceChildren();
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('active', link.dataset.nav === r.nav);
    if (link.dataset.nav === r.nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  main.replaceChildren();
  window.scrollTo(0, 0);
  const args = m.slice(1).map(decode);
  if (args.includes(null)) {
    location.replace('#/runs'); // a malformed % escape
    return;
  }
  Promise.resolve(r.page(context(controller, params), ...args)).catch((e) => {
    if (!controller.signal.aborted) showError(e);
  });
}

// ---- start --------------------------------------------------------------------

async function start() {
  applyTheme(preferredTheme());
  window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
    if (!localStorage.getItem(THEME_KEY)) applyTheme(preferredTheme());
  });
  window.addEventListener('hashchange', () => {
    const linked = fragmentToken();
    route();
    if (linked) offerToken(linked);
  });

  const linked = fragmentToken();
  await resume();
  if (linked) offerToken(linked);
}

/** Signs in again with the tab's saved token, or none where none is needed; else the form. */
async function resume() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    try {
      signIn(token, await api.whoami(token));
    } catch (err) {
      // Only a refusal drops it: after a network error a reload may work.
      if (err.status === 401) sessionStorage.removeItem(TOKEN_KEY);
      showSignIn(err.status === 401 ? 'That token was refused.' : err.detail);
    }
    return;
  }
  if (!sessionStorage.getItem(SIGNED_OUT_KEY)) {
    // `warden dev` authenticates nobody: whoami answers without a token.
    try {
      signIn(null, await api.whoami(null));
      return;
    } catch { /* a token is needed */ }
  }
  showSignIn();
}

/** decodeURIComponent, or null for a malformed escape. */
function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

/**
 * The token of a `#token=...` link, taken out of the address bar (and the
 * history) at once, whatever happens next.
 */
function fragmentToken() {
  const m = /^#token=([^&]*)/.exec(location.hash);
  if (!m) return null;
  history.replaceState(null, '', `${location.pathname}${location.search}#/runs`);
  return decode(m[1]) || null;
}

/**
 * A link's token is never used unasked (a link could sign the user into
 * someone else's tenant): says whose it is and signs in only if told to;
 * a session already open stays on a cancel.
 */
async function offerToken(token) {
  let who;
  try {
    who = await api.whoami(token);
  } catch (err) {
    const text = err.status === 401 ? 'The token in that link was refused.' : err.detail;
    if (session) showError(new Error(text));
    else showSignIn(text);
    return;
  }
  const now = session?.who;
  const question = `Sign in as ${who.tenant} (${who.role})?${
    now ? `\n\nThis ends your session as ${now.tenant || '—'} (${now.role || '—'}).` : ''}`;
  if (window.confirm(question)) signIn(token, who);
}

start();
