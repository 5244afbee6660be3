// Satoru dashboard: a single page over the REST API (/api/v1), with hash
// routes and live job events through Server-Sent Events.
//
// Rules kept throughout: API data only ever reaches the page as text
// (textContent / text nodes, never HTML); the token lives in
// sessionStorage and travels only in the Authorization header, never in a
// URL; every page owns an AbortController that cancels its requests and
// its event stream when the route changes.
'use strict';

const TOKEN_KEY = 'satoru.token';
const TERMINAL = new Set(['success', 'warning', 'failed', 'canceled']);

// ---------------------------------------------------------------- DOM

// h builds an element. Strings among children become text nodes, so API
// data can never be parsed as markup.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// fill replaces el's children, skipping empty ones as h does
// (replaceChildren would turn a null into the text "null").
function fill(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

// ---------------------------------------------------------------- format

function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

function ago(iso) {
  const d = new Date(iso);
  if (!iso || isNaN(d)) return '';
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const span = fmtDuration(Math.abs(s));
  return s >= 0 ? span + ' ago' : 'in ' + span;
}

function fmtDuration(sec) {
  sec = Math.round(sec);
  if (sec < 60) return sec + ' s';
  if (sec < 3600) return Math.round(sec / 60) + ' min';
  if (sec < 86400) return (sec / 3600).toFixed(1).replace(/\.0$/, '') + ' h';
  return (sec / 86400).toFixed(1).replace(/\.0$/, '') + ' d';
}

function fmtBytes(n) {
  if (n === undefined || n === null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(1)) + ' ' + units[i];
}

function fmtNum(n) {
  return n === undefined || n === null ? '—' : Number(n).toLocaleString();
}

function when(iso) {
  if (!iso) return '—';
  return h('time', { datetime: iso, title: iso }, fmtTime(iso), h('span', { class: 'muted' }, ' (' + ago(iso) + ')'));
}

function badge(status, attrs) {
  const s = status || 'unknown';
  const cls = /^[a-z_]+$/.test(s) ? s : 'unknown';
  return h('span', Object.assign({ class: 'badge badge-' + cls, 'data-status': s }, attrs || {}), s.replace(/_/g, ' '));
}

function shortID(id) {
  return id ? String(id).slice(0, 8) : '—';
}

function jobLink(id, label) {
  if (!id) return '—';
  return h('a', { href: '#/jobs/' + enc(id), class: 'mono' }, label || shortID(id));
}

// dl renders [label, value] pairs as a description list.
function dl(pairs, attrs) {
  return h('dl', Object.assign({ class: 'fields' }, attrs || {}),
    pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v === undefined || v === null || v === '' ? '—' : v)]));
}

function table(headers, rows, attrs) {
  return h('table', attrs || null,
    h('thead', null, h('tr', null, headers.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', null, rows));
}

function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', null, title), children);
}

function empty(text, ...more) {
  return h('p', { class: 'empty' }, text, more);
}

// ---------------------------------------------------------------- token

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function authHeaders(extra) {
  return Object.assign({ Authorization: 'Bearer ' + token() }, extra || {});
}

// ---------------------------------------------------------------- role

// The caller's token name and role (GET /api/v1/me), read once per
// token. The dashboard hides what the role may not do; the API refuses
// it anyway (403).
let me = null;
let meToken = '';
const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };

async function whoami(signal) {
  if (me && meToken === token()) return me;
  const m = await api('/api/v1/me', { signal });
  me = m;
  meToken = token();
  return me;
}

// can says the caller's role is at least role.
function can(role) {
  return !!me && (ROLE_RANK[me.role] || 0) >= (ROLE_RANK[role] || 99);
}

function showRole() {
  $('nav-add-site').hidden = !can('admin');
  $('nav-audit').hidden = !can('admin');
  $('nav-tokens').hidden = !can('admin');
  const who = $('nav-me');
  who.textContent = me ? me.name + ' (' + me.role + ')' : '';
  who.dataset.role = me ? me.role : '';
}

function notAllowed(what, role) {
  return empty('Your token (' + (me ? me.name + ', role ' + me.role : 'unknown') + ') may not ' + what + ': that needs the ' + role + ' role.');
}

// loggedOut forgets the token and shows the login form with a message.
function loggedOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  meToken = '';
  if (page) page.abort();
  page = null;
  showLogin(message);
}

function showLogin(message) {
  $('nav').hidden = true;
  $('view').replaceChildren();
  clearError();
  $('login').hidden = false;
  const err = $('login-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('login-token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const input = $('login-token');
  const t = input.value.trim();
  const err = $('login-error');
  if (!t) {
    err.textContent = 'Enter the API token.';
    err.hidden = false;
    return;
  }
  const button = $('login-submit');
  button.disabled = true;
  try {
    // One cheap authenticated read tells a wrong token from a right one.
    const res = await fetch('/api/v1/health', { headers: { Authorization: 'Bearer ' + t }, cache: 'no-store' });
    if (res.status === 401) {
      err.textContent = 'The API refused this token.';
      err.hidden = false;
      input.select();
      return;
    }
  } catch (e) {
    err.textContent = 'Cannot reach the API: ' + e.message;
    err.hidden = false;
    return;
  } finally {
    button.disabled = false;
  }
  sessionStorage.setItem(TOKEN_KEY, t);
  input.value = '';
  route();
}

// ---------------------------------------------------------------- API

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// errorOf reads the API's error envelope {"error":{"code","message"}}.
async function errorOf(res) {
  let code = 'http_' + res.status;
  let message = 'HTTP ' + res.status + (res.statusText ? ' ' + res.statusText : '');
  try {
    const e = (await res.json()).error;
    if (e && e.message) { code = e.code; message = e.message; }
  } catch (_) { /* not JSON: keep the status line */ }
  return new APIError(res.status, code, message);
}

async function request(path, opts) {
  const o = opts || {};
  const init = { method: o.method || 'GET', headers: authHeaders(o.headers), signal: o.signal, cache: 'no-store' };
  if (o.body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(o.body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    loggedOut('The API refused the token (401). Log in again.');
    throw new APIError(401, 'unauthorized', 'unauthorized');
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

async function api(path, opts) {
  const res = await request(path, opts);
  return res.status === 204 ? null : res.json();
}

// ---------------------------------------------------------------- errors

function showError(err) {
  if (err && (err.name === 'AbortError' || err.status === 401)) return;
  const box = $('error');
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

function clearError() {
  const box = $('error');
  box.textContent = '';
  box.hidden = true;
}

// action runs a button's work with the button disabled, showing errors.
async function action(button, fn) {
  button.disabled = true;
  clearError();
  try {
    await fn();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- SSE

// sseParser turns chunks of a text/event-stream into messages
// {event, data, id}; "retry:" fields come out as {retry}.
function sseParser() {
  let buf = '';
  let data = [];
  let event = '';
  let lastID = '';
  return function push(chunk) {
    buf += chunk;
    const out = [];
    for (;;) {
      const nl = buf.search(/[\r\n]/);
      if (nl < 0) break;
      if (buf[nl] === '\r' && nl + 1 === buf.length) break; // maybe \r\n split across chunks
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (data.length) out.push({ event: event || 'message', data: data.join('\n'), id: lastID });
        data = [];
        event = '';
        continue;
      }
      if (line[0] === ':') continue; // comment (keep-alive ping)
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'data') data.push(value);
      else if (field === 'event') event = value;
      else if (field === 'id') lastID = value;
      else if (field === 'retry' && /^\d+$/.test(value)) out.push({ retry: Number(value) });
    }
    return out;
  };
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// follow reads GET /api/v1/events/stream with the filters in params until
// signal aborts, calling onStep(stepEvent) for each step event and
// onState(state, err) as the connection changes. It uses fetch, not
// EventSource, because EventSource cannot send the Authorization header.
// A dropped stream is resumed after the last seen id (Last-Event-ID).
async function follow(params, signal, onStep, onState) {
  const state = onState || (() => {});
  const qs = new URLSearchParams(params).toString();
  const url = '/api/v1/events/stream' + (qs ? '?' + qs : '');
  let lastID = '';
  let retry = 2000;
  while (!signal.aborted) {
    state('connecting');
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (lastID) headers['Last-Event-ID'] = lastID;
      const res = await fetch(url, { headers, signal, cache: 'no-store' });
      if (res.status === 401) {
        loggedOut('The API refused the token (401). Log in again.');
        return;
      }
      if (!res.ok) throw await errorOf(res);
      state('live');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const push = sseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const m of push(value)) {
          if (m.retry) { retry = m.retry; continue; }
          if (m.id) lastID = m.id;
          if (m.event !== 'step') continue;
          let se;
          try { se = JSON.parse(m.data); } catch (_) { continue; }
          onStep(se);
        }
      }
    } catch (err) {
      if (signal.aborted) break;
      state('error', err);
    }
    if (signal.aborted) break;
    state('reconnecting');
    await sleep(retry, signal);
  }
  state('closed');
}

// reloader calls load at most once per delay after triggers, for pages
// that re-read their data when a job they show finishes.
function reloader(load, signal, delay) {
  let timer = 0;
  signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
  return () => {
    if (timer || signal.aborted) return;
    timer = setTimeout(() => { timer = 0; load().catch(showError); }, delay);
  };
}

// ---------------------------------------------------------------- router

let page = null; // the current page's AbortController

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const parts = path.split('/').filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
  return { parts, query };
}

function route() {
  if (page) page.abort();
  page = new AbortController();
  const signal = page.signal;
  clearError();
  if (!token()) { showLogin(); return; }
  $('login').hidden = true;
  $('nav').hidden = false;
  const view = $('view');
  view.replaceChildren();
  const { parts, query } = parseHash();
  const [a, b, c, d] = parts;
  let render;
  if (parts.length === 0) render = () => overviewPage(view, signal);
  else if (a === 'sites' && b === 'new' && parts.length === 2) render = () => addSitePage(view, signal);
  else if (a === 'sites' && b && parts.length === 2) render = () => sitePage(view, signal, b);
  else if (a === 'sites' && b && c === 'snapshots' && parts.length === 3) render = () => snapshotsPage(view, signal, b);
  else if (a === 'sites' && b && c === 'snapshots' && d && parts.length === 4) render = () => browsePage(view, signal, b, d, query.get('path') || '');
  else if (a === 'sites' && b && c === 'snapshots' && d && parts[4] === 'diff' && parts.length === 5) render = () => diffPage(view, signal, b, d, query.get('against') || '');
  else if (a === 'jobs' && b && parts.length === 2) render = () => jobPage(view, signal, b);
  else if (a === 'sync' && parts.length === 1) render = () => syncPage(view, signal);
  else if (a === 'audit' && parts.length === 1) render = () => auditPage(view, signal, query);
  else if (a === 'tokens' && parts.length === 1) render = () => tokensPage(view, signal);
  else if (a === 'check' && parts.length === 1) render = () => checkPage(view, signal);
  else render = async () => { view.append(h('h1', null, 'Not found'), empty('No such page. ', h('a', { href: '#/' }, 'Back to the overview'))); };
  whoami(signal).then(() => { showRole(); return render(); }).catch((err) => { if (!signal.aborted) showError(err); });
}

// ---------------------------------------------------------------- overview

async function overviewPage(view, signal) {
  const body = h('div', { id: 'overview', 'data-testid': 'overview' });
  view.append(h('h1', null, 'Overview'), body);

  const load = async () => {
    const [health, sites, jobs, schedules] = await Promise.all([
      api('/api/v1/health', { signal }),
      api('/api/v1/sites', { signal }),
      api('/api/v1/jobs?limit=200', { signal }),
      // The schedules only add the "next backup" column: the page works without them.
      api('/api/v1/schedules', { signal }).catch((err) => { if (err.status === 401) throw err; return null; }),
    ]);
    const jobByID = new Map(jobs.jobs.map((j) => [j.job_id, j]));
    const nextBackup = new Map();
    for (const s of (schedules && schedules.schedules) || []) {
      if (s.kind === 'backup' && s.site_uuid) nextBackup.set(s.site_uuid, s.next_run_at);
    }
    fill(body,
      countsCard(health),
      sitesCard(sites.sites, jobByID, nextBackup, schedules !== null),
      h('div', { class: 'columns narrow-wide' }, syncCard(health.sync), disksCard(health.disks || [])),
      checkCard(health.check),
      nodesCard(health.nodes || [], health.nodes_error),
    );
    body.dataset.loadedAt = String(Date.now());
  };
  await load();

  // Finished jobs change health, last success and last job: re-read then.
  const reload = reloader(load, signal, 800);
  follow({}, signal, (se) => { if (se.status && TERMINAL.has(se.status)) reload(); });
  const tick = setInterval(() => load().catch(showError), 30000);
  signal.addEventListener('abort', () => clearInterval(tick), { once: true });
}

function countsCard(health) {
  const by = (health.sites && health.sites.by_status) || {};
  const count = (label, n, status) => h('div', { class: 'count', 'data-testid': 'count-' + status },
    h('span', { class: 'count-n' }, fmtNum(n || 0)), h('span', { class: 'count-label' }, label));
  return h('section', { class: 'card', 'aria-labelledby': 'health-title' },
    h('h2', { id: 'health-title' }, 'Health ', badge(health.status, { id: 'overall-status' })),
    h('div', { class: 'counts' },
      count('sites', health.sites && health.sites.total, 'total'),
      count('success', by.success, 'success'),
      count('warning', by.warning, 'warning'),
      count('failed', by.failed, 'failed'),
      count('unknown', by.unknown, 'unknown')),
    health.problems && health.problems.length
      ? h('ul', { class: 'problems', 'data-testid': 'problems' }, health.problems.map((p) => h('li', null, p)))
      : null);
}

function sitesCard(sites, jobByID, nextBackup, haveSchedules) {
  if (!sites.length) {
    return section('Sites', empty('No sites yet. ', h('a', { href: '#/sites/new' }, 'Add the first one.')));
  }
  const rows = sites.map((s) => {
    const st = s.status || {};
    const last = st.last_job_id ? jobByID.get(st.last_job_id) : null;
    return h('tr', { 'data-testid': 'site-row', 'data-site-uuid': s.site_uuid },
      h('td', null, h('a', { href: '#/sites/' + enc(s.site_uuid), class: 'site-link' }, s.name)),
      h('td', null, badge(st.health && st.health.status, { title: (st.health && st.health.message) || '' }), pausedBadge(s)),
      h('td', null, when(st.last_success_at)),
      h('td', { 'data-testid': 'site-verified' }, verifyCell(st)),
      h('td', null, st.last_job_id
        ? [jobLink(st.last_job_id, last ? last.type : shortID(st.last_job_id)), ' ', last ? badge(last.status) : null]
        : '—'),
      h('td', null, isPaused(s) ? h('span', { class: 'muted' }, 'paused')
        : !haveSchedules ? h('span', { class: 'muted' }, 'unavailable')
        : nextBackup.has(s.site_uuid) ? when(nextBackup.get(s.site_uuid)) : h('span', { class: 'muted' }, 'not scheduled yet')));
  });
  return section('Sites', table(['Site', 'Health', 'Last success', 'Verified', 'Last job', 'Next backup'], rows, { id: 'sites-table' }));
}

// verifyCell is a site's last restore test: when it last verified, and
// a failed badge (with the reason as its title) when the last one failed.
function verifyCell(st) {
  const v = st.last_verify;
  if (!v) return h('span', { class: 'muted' }, 'never');
  if (v.status === 'failed') return [badge('failed', { title: v.error || '' }), ' ', when(v.at)];
  return when(st.last_verified_at || v.at);
}

function syncCard(sync) {
  const s = sync || {};
  return section('Offsite sync',
    dl([
      ['Status', badge(s.status, { 'data-testid': 'sync-status' })],
      ['Last success', when(s.last_success_at)],
      ['Pending snapshots', fmtNum(s.snapshots_pending)],
      ['Offsite lag', s.oldest_pending_age_seconds ? fmtDuration(s.oldest_pending_age_seconds) : 'none'],
      s.error ? ['Error', h('span', { class: 'error-text' }, s.error)] : null,
    ]),
    h('p', null, h('a', { href: '#/sync' }, 'Sync details')));
}

function disksCard(disks) {
  if (!disks.length) return section('Disk headroom', empty('No disks configured.'));
  const rows = disks.map((d) => h('tr', { 'data-testid': 'disk-row' },
    h('td', null, d.name), h('td', { class: 'mono wrap' }, d.path),
    h('td', null, badge(d.status)),
    d.error
      ? h('td', { colspan: 2 }, h('span', { class: 'error-text' }, d.error))
      : d.status === 'remote' ? h('td', { colspan: 2 }, d.note || 'remote repository: no local free space')
      : [h('td', { class: 'nowrap' }, fmtBytes(d.free_bytes) + ' (' + (d.free_percent || 0).toFixed(1) + ' %)'),
        h('td', { class: 'nowrap' }, fmtBytes(d.total_bytes))],
    h('td', { class: 'nowrap' }, [d.min_free_bytes ? fmtBytes(d.min_free_bytes) : null, d.min_free_bytes && d.min_free_percent ? ', ' : null,
      d.min_free_percent ? d.min_free_percent + ' %' : null, !d.min_free_bytes && !d.min_free_percent ? '—' : null])));
  return section('Disk headroom', table(['Disk', 'Path', 'Status', 'Free', 'Size', 'Minimum free'], rows, { id: 'disks-table' }));
}

// Worker nodes: a node is a staging folder (its id); it owns the sites
// whose last snapshot was taken from it. A gone node shows when it was
// last seen and what ran there.
function nodesCard(nodes, error) {
  const note = error ? h('p', { class: 'error-text' }, 'Node records unavailable: ' + error) : null;
  if (!nodes.length) return section('Worker nodes', empty('No worker node has run yet.'), note);
  const rows = nodes.map((n) => {
    const insts = (n.instances || []).filter((i) => n.status !== 'live' || i.live);
    return h('tr', { 'data-testid': 'node-row', 'data-node': n.node, 'data-status': n.status },
      h('td', { class: 'mono', title: n.node }, shortID(n.node)),
      h('td', null, badge(n.status)),
      h('td', null, insts.map((i) => i.service + ' ' + i.instance).join(', ') || '—'),
      h('td', { 'data-testid': 'node-assigned' }, fmtNum(n.sites_assigned || 0) + ' (' + fmtNum(n.partitions || 0) + ' partitions)'),
      h('td', { 'data-testid': 'node-sites' }, fmtNum(n.sites_owned || 0)),
      h('td', null, fmtNum(n.running_jobs || 0)),
      h('td', null, n.status === 'live' ? h('span', { class: 'muted' }, 'now') : when(n.last_seen)));
  });
  return section('Worker nodes', table(['Node', 'Status', 'Instances', 'Sites assigned', 'Baselines held', 'Running jobs', 'Last seen'], rows, { id: 'nodes-table' }), note);
}

// ---------------------------------------------------------------- add site

function field(id, label, input, hint) {
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint' }, hint) : null);
}

async function addSitePage(view, signal) {
  if (!can('admin')) {
    view.append(h('h1', null, 'Add a site'), notAllowed('add sites', 'admin'));
    return;
  }
  const form = h('form', { id: 'site-form', class: 'card form', novalidate: true },
    field('site-name', 'Name', h('input', { name: 'name', required: true, autocomplete: 'off' })),
    h('div', { class: 'row' },
      field('site-host', 'Host', h('input', { name: 'host', required: true, autocomplete: 'off' })),
      field('site-port', 'Port', h('input', { name: 'port', type: 'number', min: 1, max: 65535, value: 22 })),
      field('site-user', 'User', h('input', { name: 'user', value: 'root', autocomplete: 'off' }))),
    field('site-key-path', 'SSH private key path', h('input', { name: 'ssh_key_path', autocomplete: 'off', placeholder: '/etc/satoru/id_ed25519' }),
      'A path on the Satoru host; empty uses the default key.'),
    field('site-host-key', 'Host key', h('textarea', { name: 'host_key', rows: 2, spellcheck: 'false', placeholder: 'ssh-ed25519 AAAA…' }),
      'The edge host\'s public key (ssh-keyscan). Leave empty to pin it later from a preflight.'),
    h('div', { class: 'field check' },
      h('input', { id: 'site-tofu', name: 'trust_on_first_use', type: 'checkbox' }),
      h('label', { for: 'site-tofu' }, 'Trust the host key on first use')),
    h('fieldset', null, h('legend', null, 'First target'),
      h('div', { class: 'row' },
        field('target-mode', 'Mode', h('select', { name: 'mode' },
          h('option', { value: 'directory' }, 'directory'), h('option', { value: 'sqlite_dump' }, 'sqlite_dump'))),
        field('target-path', 'Path on the edge host', h('input', { name: 'path', required: true, autocomplete: 'off', placeholder: '/srv/www' }))),
      field('target-excludes', 'Excludes (directory only, one per line)', h('textarea', { name: 'excludes', rows: 2, spellcheck: 'false' }))),
    h('button', { type: 'submit', id: 'site-submit' }, 'Add site'));
  view.append(h('h1', null, 'Add site'), form);

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = (id) => $(id).value.trim();
    const target = { mode: v('target-mode'), path: v('target-path') };
    const excludes = v('target-excludes').split('\n').map((s) => s.trim()).filter(Boolean);
    if (excludes.length) target.excludes = excludes;
    const body = {
      name: v('site-name'), host: v('site-host'), port: Number(v('site-port') || 22), user: v('site-user'),
      trust_on_first_use: $('site-tofu').checked, targets: [target],
    };
    if (v('site-key-path')) body.ssh_key_path = v('site-key-path');
    if (v('site-host-key')) body.host_key = v('site-host-key');
    action($('site-submit'), async () => {
      const site = await api('/api/v1/sites', { method: 'POST', body, signal });
      location.hash = '#/sites/' + enc(site.site_uuid);
    });
  });
  $('site-name').focus();
}

// ---------------------------------------------------------------- site

async function sitePage(view, signal, uuid) {
  const box = h('div', { id: 'site-page', 'data-site-uuid': uuid });
  view.append(box);

  const load = async () => {
    const [site, jobs] = await Promise.all([
      api('/api/v1/sites/' + enc(uuid), { signal }),
      api('/api/v1/jobs?limit=20&site_uuid=' + enc(uuid), { signal }),
    ]);
    const keyCard = await hostKeyCard(site, jobs.jobs, signal, load);
    const st = site.status || {};
    const health = st.health || {};
    fill(box,
      h('h1', null, site.name, ' ', badge(health.status, { id: 'site-health' }), pausedBadge(site)),
      health.message ? h('p', { class: 'health-message' }, health.message) : null,
      h('div', { class: 'actions' },
        ['preflight', 'backup', 'retention', 'verify'].filter(() => can('operator')).map((type) => h('button', {
          type: 'button', id: 'run-' + type,
          onclick: (ev) => action(ev.currentTarget, async () => {
            const res = await startSiteJob(uuid, type, signal);
            if (res) location.hash = '#/jobs/' + enc(res.job_id);
          }),
        }, 'Run ' + type)),
        h('a', { class: 'button secondary', id: 'site-snapshots', href: '#/sites/' + enc(uuid) + '/snapshots' }, 'Snapshots')),
      h('div', { class: 'columns' },
        section('Site', dl([
          ['Host', h('span', { class: 'mono' }, site.host + ':' + site.port)],
          ['User', site.user],
          ['SSH key', site.ssh_key_path ? h('span', { class: 'mono' }, site.ssh_key_path) : 'default'],
          ['Host key', site.host_key ? h('span', { class: 'mono wrap' }, site.host_key) : (site.trust_on_first_use ? 'trust on first use' : 'not pinned')],
          site.bandwidth_limit_kbps ? ['Bandwidth limit', site.bandwidth_limit_kbps + ' kbit/s'] : null,
        ])),
        section('Status', dl([
          ['Last success', when(st.last_success_at)],
          ['Last scan', when(st.last_scan_at)],
          ['Last preflight', when(st.last_preflight_at)],
          ['Last retention', when(st.last_retention_at)],
          ['Last verified', when(st.last_verified_at)],
          ['Last job', jobLink(st.last_job_id)],
        ]))),
      verifyCard(uuid, st.last_verify),
      keyCard,
      policyCard(site, signal, load),
      targetsCard(site.targets || []),
      section('Recent jobs', jobsTable(jobs.jobs, 'site-jobs')));
  };
  await load();

  // Re-read when one of the site's jobs changes status (started, finished).
  const reload = reloader(load, signal, 800);
  const statusOf = new Map();
  follow({ site_uuid: uuid }, signal, (se) => {
    if (!se.status || statusOf.get(se.job_id) === se.status) return;
    statusOf.set(se.job_id, se.status);
    reload();
  });
}

// verifyCard is the site's last restore test (verify job) in detail.
function verifyCard(uuid, v) {
  if (!v) return section('Restore test', empty('Not verified yet. "Run verify" restores the latest snapshot into a temporary folder and checks it.'));
  return section('Restore test', h('div', { id: 'site-verify', 'data-status': v.status }, dl([
    ['Status', badge(v.status, { id: 'verify-status' })],
    ['At', when(v.at)],
    ['Job', jobLink(v.job_id)],
    ['Snapshot', v.snapshot_id ? h('a', { class: 'mono', href: snapshotHref(uuid, v.snapshot_id) }, shortID(v.snapshot_id)) : '—'],
    ['Files', fmtNum(v.files)],
    ['Bytes', fmtBytes(v.bytes)],
    v.error ? ['Error', h('span', { class: 'error-text', id: 'verify-error' }, v.error)] : null,
  ])));
}

function targetsCard(targets) {
  if (!targets.length) return section('Targets', empty('No targets.'));
  const rows = targets.map((t) => {
    const s = t.last_scan;
    return h('tr', { 'data-testid': 'target-row', 'data-target-hash': t.target_hash },
      h('td', null, t.mode), h('td', { class: 'mono' }, t.path), h('td', { class: 'mono' }, t.target_hash),
      h('td', null, s ? when(s.at) : 'never'), h('td', null, s ? badge(s.status) : '—'),
      h('td', null, s ? fmtBytes(s.bytes) : '—'), h('td', null, s ? fmtNum(s.files) : '—'),
      h('td', null, s && s.error ? h('span', { class: 'error-text' }, s.error) : ''));
  });
  return section('Targets', table(['Mode', 'Path', 'Hash', 'Last scan', 'Status', 'Bytes', 'Files', 'Error'], rows, { id: 'targets-table' }));
}

function jobsTable(jobs, id) {
  if (!jobs.length) return empty('No jobs yet.');
  const rows = jobs.map((j) => h('tr', { 'data-testid': 'job-row', 'data-job-id': j.job_id },
    h('td', null, jobLink(j.job_id)), h('td', null, j.type), h('td', null, badge(j.status)),
    h('td', null, when(j.created_at)), h('td', null, when(j.finished_at)),
    h('td', null, j.error ? h('span', { class: 'error-text' }, j.error) : '')));
  return table(['Job', 'Type', 'Status', 'Created', 'Finished', 'Error'], rows, { id });
}

// hostKeyCard offers to pin the key a preflight saw (event data host_key
// and fingerprint) or the one learned on first use, when the site has no
// pinned key. Pinning always asks for confirmation: the fingerprint must
// be checked out of band.
async function hostKeyCard(site, jobs, signal, reload) {
  if (site.host_key || !can('admin')) return null;
  let line = '';
  let fp = '';
  let source = '';
  for (const j of jobs.filter((j) => TERMINAL.has(j.status)).slice(0, 3)) {
    const evs = await api('/api/v1/jobs/' + enc(j.job_id) + '/events', { signal });
    const e = evs.events.slice().reverse().find((e) => e.data && typeof e.data.host_key === 'string');
    if (e) {
      line = e.data.host_key;
      fp = e.data.fingerprint || '';
      source = 'offered to the ' + j.type + ' job ' + shortID(j.job_id);
      break;
    }
  }
  const learned = site.status && site.status.learned_host_key;
  if (!line && learned) { line = learned; source = 'learned on first use'; }
  if (!line) return null;
  if (!fp) fp = await fingerprint(line);
  const button = h('button', {
    type: 'button', id: 'pin-host-key',
    onclick: (ev) => {
      if (!confirm('Pin this host key for ' + site.name + '?\n\n' + (fp || line) + '\n\nCompare it with the host\'s own key first.')) return;
      action(ev.currentTarget, async () => {
        await api('/api/v1/sites/' + enc(site.site_uuid), { method: 'PATCH', body: { host_key: line }, signal });
        await reload();
      });
    },
  }, 'Pin host key');
  return section('Host key',
    h('p', null, 'The site has no pinned host key. The key ', source, ':'),
    dl([['Fingerprint', h('span', { class: 'mono', id: 'host-key-fingerprint' }, fp || 'unavailable')],
      ['Key', h('span', { class: 'mono wrap' }, line)]]),
    button);
}

// fingerprint is OpenSSH's SHA256 fingerprint of "type base64"; empty
// where WebCrypto is unavailable (plain http to a non-local host).
async function fingerprint(line) {
  try {
    const b64 = line.trim().split(/\s+/)[1];
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const sum = new Uint8Array(await crypto.subtle.digest('SHA-256', raw));
    return 'SHA256:' + btoa(String.fromCharCode(...sum)).replace(/=+$/, '');
  } catch (_) {
    return '';
  }
}

// ---------------------------------------------------------------- job

async function jobPage(view, signal, id) {
  const [job, stored] = await Promise.all([
    api('/api/v1/jobs/' + enc(id), { signal }),
    api('/api/v1/jobs/' + enc(id) + '/events', { signal }),
  ]);
  const status = badge(job.status, { id: 'job-status', 'aria-live': 'polite' });
  const fields = h('div', { id: 'job-fields' });
  const tbody = h('tbody', { id: 'job-events' });
  const events = h('table', { id: 'job-events-table', 'data-stream': 'off', 'data-live-count': '0' },
    h('thead', null, h('tr', null, ['#', 'Time', 'Step', 'Level', 'Target', 'Message'].map((c) => h('th', { scope: 'col' }, c)))),
    tbody);
  const streamState = h('span', { id: 'stream-state', class: 'muted' });
  const cancel = h('button', {
    type: 'button', id: 'job-cancel', class: 'secondary', hidden: TERMINAL.has(job.status) || !can('operator'),
    onclick: (ev) => action(ev.currentTarget, () => api('/api/v1/jobs/' + enc(id) + '/cancel', { method: 'POST', signal })),
  }, 'Cancel job');
  view.append(h('div', { id: 'job-page', 'data-job-id': id },
    h('h1', null, 'Job ', h('span', { class: 'mono' }, shortID(id)), ' ', status),
    h('div', { class: 'actions' }, cancel),
    fields,
    h('section', { class: 'card' }, h('h2', null, 'Events ', streamState), events)));

  const setStatus = (s) => {
    status.dataset.status = s;
    status.className = 'badge badge-' + (/^[a-z_]+$/.test(s) ? s : 'unknown');
    status.textContent = s;
    cancel.hidden = TERMINAL.has(s) || !can('operator');
  };
  let siteName = '';
  const renderJob = (j) => fill(fields, jobDetails(j, siteName));
  renderJob(job);
  if (job.site_uuid) {
    api('/api/v1/sites/' + enc(job.site_uuid), { signal }).then((site) => {
      siteName = site.name;
      const link = $('job-site-link');
      if (link) link.textContent = siteName;
    }).catch(showError);
  }

  const seen = new Set();
  let live = 0;
  const addEvent = (e, isLive) => {
    if (seen.has(e.seq)) return;
    seen.add(e.seq);
    const row = eventRow(e);
    if (isLive) {
      live++;
      row.dataset.live = 'true';
      // Loose latency: from the worker's timestamp to the row on screen.
      const ms = Date.now() - new Date(e.ts).getTime();
      row.dataset.latencyMs = String(ms);
      events.dataset.liveCount = String(live);
    }
    const after = Array.from(tbody.children).find((r) => Number(r.dataset.seq) > e.seq);
    tbody.insertBefore(row, after || null);
  };
  for (const e of stored.events) addEvent(e, false);
  if (!stored.events.length) tbody.append(h('tr', { class: 'placeholder' }, h('td', { colspan: 6 }, 'No events yet.')));

  if (TERMINAL.has(job.status)) return;

  const stream = new AbortController();
  signal.addEventListener('abort', () => stream.abort(), { once: true });
  let finishing = false;
  // finish re-reads the job once a terminal status arrived: the final
  // event is published just before the job document is written.
  const finish = async () => {
    if (finishing) return;
    finishing = true;
    const deadline = Date.now() + 15000;
    let j = await api('/api/v1/jobs/' + enc(id), { signal });
    while (!TERMINAL.has(j.status) && Date.now() < deadline && !signal.aborted) {
      await sleep(250, signal);
      j = await api('/api/v1/jobs/' + enc(id), { signal });
    }
    renderJob(j);
    if (TERMINAL.has(j.status)) setStatus(j.status);
    stream.abort();
  };
  // A safety net for a broken stream: the stored job still ends the page.
  const poll = setInterval(async () => {
    try {
      const j = await api('/api/v1/jobs/' + enc(id), { signal: stream.signal });
      if (TERMINAL.has(j.status)) finish().catch(showError);
    } catch (err) { showError(err); }
  }, 10000);
  stream.signal.addEventListener('abort', () => clearInterval(poll), { once: true });
  follow({ job_id: id }, stream.signal, (se) => {
    if (se.job_id !== id || !se.event) return;
    const ph = tbody.querySelector('.placeholder');
    if (ph) ph.remove();
    addEvent(se.event, true);
    if (se.status) setStatus(se.status);
    if (se.status && TERMINAL.has(se.status)) finish().catch(showError);
  }, (state, err) => {
    events.dataset.stream = state;
    streamState.textContent = {
      connecting: '(connecting…)', live: '(live)', reconnecting: '(reconnecting…)', closed: '', error: '(stream error)',
    }[state] || '';
    if (err) showError(new Error('Event stream: ' + err.message));
  });
}

// Summary keys whose numbers are byte counts.
const BYTE_KEYS = /(^|_)bytes($|_)|^data_added$|^size$/;

function jobDetails(j, siteName) {
  const summary = j.summary && Object.keys(j.summary).length
    ? h('table', { class: 'compact', id: 'job-summary' }, h('tbody', null,
      Object.entries(j.summary).map(([k, v]) => h('tr', null, h('th', { scope: 'row' }, k.replace(/_/g, ' ')),
        h('td', { class: 'mono wrap', title: typeof v === 'number' ? String(v) : null },
          typeof v === 'number' && BYTE_KEYS.test(k) ? fmtBytes(v) : typeof v === 'object' ? JSON.stringify(v) : String(v))))))
    : null;
  const targets = j.targets && j.targets.length
    ? table(['Target', 'Status', 'Files', 'Bytes', 'Transferred', 'Duration', 'Note'], j.targets.map((t) => h('tr', null,
      h('td', { class: 'mono' }, t.path), h('td', null, badge(t.status)), h('td', null, fmtNum(t.files)),
      h('td', null, fmtBytes(t.bytes)), h('td', null, fmtBytes(t.transferred)),
      h('td', null, t.duration_ms ? (t.duration_ms / 1000).toFixed(1) + ' s' : '—'),
      h('td', null, [t.note || '', t.error ? h('span', { class: 'error-text' }, ' ' + t.error) : null]))), { id: 'job-targets' })
    : null;
  return h('div', null, h('div', { class: 'columns' },
    section('Job', dl([
      ['Type', j.type],
      ['Site', j.site_uuid ? h('a', { href: '#/sites/' + enc(j.site_uuid), id: 'job-site-link' }, siteName || shortID(j.site_uuid)) : 'repository'],
      ['Status', badge(j.status)],
      ['Created', when(j.created_at)],
      ['Started', when(j.started_at)],
      ['Finished', when(j.finished_at)],
      ['Attempts', String(j.attempts)],
      j.trigger ? ['Trigger', h('span', { id: 'job-trigger' }, j.trigger + (j.policy_note ? ' — ' + j.policy_note : ''))] : null,
      j.worker ? ['Worker', j.worker] : null,
      j.error ? ['Error', h('span', { class: 'error-text', id: 'job-error' }, j.error)] : null,
      j.restore ? ['Restore', h('span', { class: 'mono wrap' }, JSON.stringify(j.restore))] : null,
    ])),
    summary ? section('Summary', summary) : null),
  targets ? section('Targets', targets) : null);
}

function eventRow(e) {
  const data = e.data && Object.keys(e.data).length
    ? h('details', null, h('summary', null, 'data'), h('pre', null, JSON.stringify(e.data, null, 2)))
    : null;
  return h('tr', { 'data-seq': e.seq, 'data-step': e.step, class: 'level-' + (/^[a-z]+$/.test(e.level) ? e.level : 'info') },
    h('td', null, String(e.seq)), h('td', { class: 'nowrap' }, h('time', { datetime: e.ts, title: e.ts }, new Date(e.ts).toLocaleTimeString())),
    h('td', null, e.step), h('td', null, e.level), h('td', { class: 'mono' }, e.target_hash || ''),
    h('td', null, e.message, data));
}

// ---------------------------------------------------------------- snapshots

async function snapshotsPage(view, signal, uuid) {
  const [site, snaps] = await Promise.all([
    api('/api/v1/sites/' + enc(uuid), { signal }),
    api('/api/v1/sites/' + enc(uuid) + '/snapshots', { signal }),
  ]);
  for (const s of snaps.snapshots) {
    snapshotCache.set(uuid + '/' + s.id, s);
    snapshotCache.set(uuid + '/' + s.short_id, s);
  }
  // Newest first: the previous snapshot of each is the next row.
  const rows = snaps.snapshots.map((s, i) => h('tr', { 'data-testid': 'snapshot-row', 'data-snapshot-id': s.id },
    h('td', null, h('a', { href: snapshotHref(uuid, s.id, ''), class: 'snapshot-link' }, fmtTime(s.time))),
    h('td', { class: 'mono' }, s.short_id), h('td', null, jobLink(s.job_id)),
    h('td', null, fmtNum(s.files)), h('td', null, fmtBytes(s.size)), h('td', null, fmtBytes(s.data_added)),
    h('td', null, i + 1 < snaps.snapshots.length
      ? h('a', { href: diffHref(uuid, s.id, snaps.snapshots[i + 1].id), class: 'diff-link', 'data-testid': 'diff-link' }, 'vs previous')
      : h('span', { class: 'muted' }, 'first'))));
  view.append(h('div', { id: 'snapshots-page' },
    h('h1', null, 'Snapshots of ', h('a', { href: '#/sites/' + enc(uuid) }, site.name)),
    h('section', { class: 'card' }, rows.length
      ? table(['Time', 'Id', 'Job', 'Files', 'Size', 'Added', 'Changes'], rows, { id: 'snapshots-table' })
      : empty('No snapshots yet: run a backup.'))));
}

// Snapshots never change, and listing them runs restic: the browser
// keeps the ones it has seen, so descending into folders costs one call.
const snapshotCache = new Map();

async function findSnapshot(uuid, id, signal) {
  const key = uuid + '/' + id;
  if (!snapshotCache.has(key)) {
    const list = await api('/api/v1/sites/' + enc(uuid) + '/snapshots', { signal });
    for (const s of list.snapshots) {
      snapshotCache.set(uuid + '/' + s.id, s);
      snapshotCache.set(uuid + '/' + s.short_id, s);
    }
  }
  return snapshotCache.get(key);
}

function snapshotHref(uuid, id, path) {
  return '#/sites/' + enc(uuid) + '/snapshots/' + enc(id) + (path ? '?path=' + enc(path) : '');
}

async function browsePage(view, signal, uuid, snapID, path) {
  const [site, snap] = await Promise.all([
    api('/api/v1/sites/' + enc(uuid), { signal }),
    findSnapshot(uuid, snapID, signal),
  ]);
  if (!snap) throw new Error('snapshot ' + snapID + ' is not one of ' + site.name + '\'s');
  const root = (snap.paths && snap.paths[0]) || '/';
  const dir = path || root;
  const tree = await api('/api/v1/snapshots/' + enc(snap.id) + '/tree?path=' + enc(dir), { signal });
  // The root's folders are target hashes: name them by their target path.
  const targetPath = new Map((site.targets || []).map((t) => [t.target_hash, t.path]));
  const label = (name, p) => (p.slice(0, p.lastIndexOf('/')) === root && targetPath.has(name) ? name + ' — ' + targetPath.get(name) : name);

  const crumbs = [h('a', { href: snapshotHref(uuid, snap.id, '') }, 'snapshot ' + snap.short_id)];
  if (dir !== root && dir.startsWith(root + '/')) {
    let p = root;
    for (const part of dir.slice(root.length + 1).split('/')) {
      p += '/' + part;
      crumbs.push(' / ', h('a', { href: snapshotHref(uuid, snap.id, p) }, label(part, p)));
    }
  }

  const selected = new Set();
  const restoreButton = h('button', { type: 'submit', id: 'restore-submit', disabled: true }, 'Restore selected');
  const selCount = h('span', { id: 'restore-selected', class: 'muted' }, 'nothing selected');
  const onSelect = (p, on) => {
    if (on) selected.add(p); else selected.delete(p);
    selCount.textContent = selected.size ? selected.size + ' selected' : 'nothing selected';
    restoreButton.disabled = selected.size === 0;
  };
  const rows = tree.entries.map((e) => {
    const isDir = e.type === 'dir';
    return h('tr', { 'data-testid': 'entry-row', 'data-name': e.name, 'data-type': e.type },
      h('td', null, can('operator') ? h('input', { type: 'checkbox', class: 'select', 'aria-label': 'select ' + e.name, onchange: (ev) => onSelect(e.path, ev.target.checked) }) : ''),
      h('td', null, isDir
        ? h('a', { href: snapshotHref(uuid, snap.id, e.path), class: 'entry-link' }, label(e.name, e.path) + '/')
        : h('span', { class: 'mono' }, e.name)),
      h('td', null, e.type), h('td', null, isDir ? '' : fmtBytes(e.size)), h('td', null, when(e.mtime)),
      // Snapshot contents are for operators and admins only.
      h('td', null, can('operator') ? h('button', {
        type: 'button', class: 'small secondary', 'data-testid': 'download', 'data-name': e.name,
        title: isDir ? 'Download the folder as a tar archive' : 'Download the file',
        onclick: (ev) => action(ev.currentTarget, () => download(snap.id, e.path, isDir ? e.name + '.tar' : e.name, signal)),
      }, isDir ? 'Download .tar' : 'Download') : ''));
  });

  view.append(h('div', { id: 'browse-page', 'data-snapshot-id': snap.id, 'data-path': dir },
    h('h1', null, 'Browse ', h('a', { href: '#/sites/' + enc(uuid) }, site.name)),
    h('p', { class: 'crumbs', id: 'crumbs' }, crumbs),
    h('section', { class: 'card' },
      h('p', { class: 'muted' }, 'Snapshot ', h('span', { class: 'mono' }, snap.short_id), ' of ', fmtTime(snap.time), ', folder ',
        h('span', { class: 'mono' }, dir)),
      rows.length ? table(['', 'Name', 'Type', 'Size', 'Modified', ''], rows, { id: 'entries-table' }) : empty('Empty folder.'),
      tree.omitted ? h('p', { class: 'muted' }, tree.omitted + ' more entries not listed.') : null),
    can('operator') ? restoreForm(uuid, snap, selected, restoreButton, selCount, signal) : null));
}

// download fetches with the Authorization header (a plain link cannot
// carry it), then hands the Blob to the browser as a file. The whole
// file passes through the tab's memory.
async function download(snapID, path, fallbackName, signal) {
  const res = await request('/api/v1/snapshots/' + enc(snapID) + '/download?path=' + enc(path), { signal });
  const blob = await res.blob();
  const name = filenameOf(res.headers.get('Content-Disposition')) || fallbackName;
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function filenameOf(disposition) {
  if (!disposition) return '';
  let m = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition);
  let name = '';
  if (m) { try { name = decodeURIComponent(m[1].trim()); } catch (_) { name = ''; } }
  if (!name && (m = /filename\s*=\s*"((?:[^"\\]|\\.)*)"/i.exec(disposition))) name = m[1].replace(/\\(.)/g, '$1');
  return name.replace(/[/\\]/g, '_');
}

function restoreForm(uuid, snap, selected, submit, selCount, signal) {
  const form = h('form', { id: 'restore-form', class: 'card form', novalidate: true },
    h('h2', null, 'Restore'),
    h('p', null, selCount),
    h('fieldset', null, h('legend', null, 'Destination'),
      h('div', { class: 'field check' },
        h('input', { type: 'radio', name: 'dest', id: 'restore-dest-local', value: 'local', checked: true }),
        h('label', { for: 'restore-dest-local' }, 'A folder on the Satoru host')),
      can('admin') ? h('div', { class: 'field check' },
        h('input', { type: 'radio', name: 'dest', id: 'restore-dest-site', value: 'site' }),
        h('label', { for: 'restore-dest-site' }, 'A folder on the edge host (over the site\'s ssh)')) : null,
      field('restore-path', 'Destination path', h('input', { required: true, autocomplete: 'off', placeholder: '/var/tmp/restore' }),
        'Must not exist (on the edge host: or be empty), unless overwrite is on (files of the same name are replaced, nothing is deleted). Satoru\'s own folders are refused.')),
    h('div', { class: 'field check' }, h('input', { type: 'checkbox', id: 'restore-overwrite' }), h('label', { for: 'restore-overwrite' }, 'Overwrite')),
    h('div', { class: 'field check' }, h('input', { type: 'checkbox', id: 'restore-dry-run' }), h('label', { for: 'restore-dry-run' }, 'Dry run (list the changes only)')),
    submit);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const path = $('restore-path').value.trim();
    const destination = $('restore-dest-site') && $('restore-dest-site').checked ? { to_site: true, path } : { local_path: path };
    const body = {
      snapshot_id: snap.id, paths: Array.from(selected), destination,
      overwrite: $('restore-overwrite').checked, dry_run: $('restore-dry-run').checked,
    };
    action(submit, async () => {
      const res = await api('/api/v1/sites/' + enc(uuid) + '/restores', { method: 'POST', body, signal });
      location.hash = '#/jobs/' + enc(res.job_id);
    });
  });
  return form;
}

// ---------------------------------------------------------------- sync

async function syncPage(view, signal) {
  const box = h('div', { id: 'sync-page' });
  view.append(h('h1', null, 'Offsite sync'), box);
  const load = async () => {
    const [s, jobs, schedules] = await Promise.all([
      api('/api/v1/sync', { signal }),
      api('/api/v1/jobs?type=restic_sync&limit=10', { signal }),
      api('/api/v1/schedules', { signal }).catch((err) => { if (err.status === 401) throw err; return null; }),
    ]);
    const next = ((schedules && schedules.schedules) || []).find((x) => x.kind === 'sync');
    const now = h('button', {
      type: 'button', id: 'sync-now',
      onclick: (ev) => action(ev.currentTarget, async () => {
        try {
          const res = await api('/api/v1/sync', { method: 'POST', signal });
          location.hash = '#/jobs/' + enc(res.job_id);
        } catch (err) {
          if (err.status === 409) throw new Error('Offsite not configured: set restic_b2_repository to copy snapshots offsite.');
          throw err;
        }
      }),
    }, 'Sync now');
    fill(box,
      can('operator') ? h('div', { class: 'actions' }, now) : null,
      section('State', dl([
        ['Health', badge(s.health, { id: 'sync-health' })],
        ['Configured', s.configured ? 'yes' : 'no'],
        ['Repository', s.repository ? h('span', { class: 'mono' }, s.repository) : '—'],
        ['Last attempt', when(s.last_attempt_at)],
        ['Last result', badge(s.status)],
        ['Last success', when(s.last_success_at)],
        ['Snapshots copied (last run)', fmtNum(s.snapshots_copied)],
        ['Bytes (last run)', fmtBytes(s.bytes)],
        ['Pending snapshots', fmtNum(s.snapshots_pending)],
        ['Offsite lag', s.oldest_pending_age_seconds ? fmtDuration(s.oldest_pending_age_seconds) : 'none'],
        ['Interval', s.interval_seconds ? fmtDuration(s.interval_seconds) : '—'],
        ['Next scheduled sync', next ? when(next.next_run_at) : '—'],
        s.error ? ['Error', h('span', { class: 'error-text' }, s.error)] : null,
      ])),
      section('Recent sync jobs', jobsTable(jobs.jobs, 'sync-jobs')));
  };
  await load();
  const reload = reloader(load, signal, 800);
  const statusOf = new Map();
  follow({ site_uuid: '_repo' }, signal, (se) => {
    if (!se.status || statusOf.get(se.job_id) === se.status) return;
    statusOf.set(se.job_id, se.status);
    reload();
  });
}

// ---------------------------------------------------------------- audit

// auditPage lists the audit trail (admins only), newest first, filtered
// by the hash's query (token, action, site_uuid), a page at a time.
async function auditPage(view, signal, query) {
  view.append(h('h1', null, 'Audit trail'));
  if (!can('admin')) {
    view.append(notAllowed('read the audit trail', 'admin'));
    return;
  }
  const q = new URLSearchParams();
  for (const k of ['token', 'action', 'site_uuid', 'before']) if (query.get(k)) q.set(k, query.get(k));
  q.set('limit', '100');
  const list = await api('/api/v1/audit?' + q.toString(), { signal });
  const filterHref = (k, v) => { const n = new URLSearchParams(); n.set(k, v); return '#/audit?' + n.toString(); };
  const detail = (e) => Object.entries(Object.assign({}, e.ids || {}, e.detail || {}))
    .filter(([k]) => k !== 'site_uuid').map(([k, v]) => k + '=' + v).join(' ');
  const rows = list.entries.map((e) => h('tr', { 'data-testid': 'audit-row', 'data-action': e.action },
    h('td', null, fmtTime(e.at)),
    h('td', null, h('a', { href: filterHref('token', e.token) }, e.token), ' ', h('span', { class: 'muted' }, e.role)),
    h('td', { class: 'mono' }, e.remote),
    h('td', null, h('a', { href: filterHref('action', e.action) }, e.action)),
    h('td', null, String(e.status)),
    h('td', null, e.site_uuid ? h('a', { href: '#/sites/' + enc(e.site_uuid), class: 'mono' }, shortID(e.site_uuid)) : ''),
    h('td', { class: 'mono wrap' }, detail(e))));
  const filters = ['token', 'action', 'site_uuid'].filter((k) => query.get(k)).map((k) => k + ' = ' + query.get(k));
  view.append(h('section', { class: 'card', id: 'audit-page' },
    filters.length ? h('p', null, 'Filtered by ', filters.join(', '), ' — ', h('a', { href: '#/audit' }, 'show all')) : null,
    rows.length ? table(['Time', 'Token', 'From', 'Action', 'Status', 'Site', 'Details'], rows, { id: 'audit-table' }) : empty('No entries.'),
    list.next ? h('p', null, h('a', { id: 'audit-older', href: '#/audit?' + (() => { const n = new URLSearchParams(q); n.delete('limit'); n.set('before', list.next); return n.toString(); })() }, 'Older entries')) : null));
}

// ---------------------------------------------------------------- tokens

// tokensPage lists the scoped tokens (admins only), creates one (its
// secret is shown once, here) and revokes one after a confirmation.
async function tokensPage(view, signal) {
  view.append(h('h1', null, 'API tokens'));
  if (!can('admin')) {
    view.append(notAllowed('manage tokens', 'admin'));
    return;
  }
  const listBox = h('div', { id: 'tokens-list' });
  const secretBox = h('div', { id: 'token-secret-box', class: 'card', hidden: true });
  const load = async () => {
    const list = await api('/api/v1/tokens', { signal });
    const rows = list.tokens.map((t) => h('tr', { 'data-testid': 'token-row', 'data-name': t.name },
      h('td', null, t.name), h('td', null, t.role), h('td', { class: 'mono' }, t.id), h('td', null, when(t.created_at)), h('td', null, t.created_by),
      h('td', null, h('button', {
        type: 'button', class: 'small secondary', 'data-testid': 'token-revoke',
        onclick: (ev) => {
          if (!confirm('Revoke the token ' + t.name + ' (' + t.role + ')? Requests with it are refused at once.')) return;
          action(ev.currentTarget, async () => {
            await api('/api/v1/tokens/' + enc(t.id), { method: 'DELETE', signal });
            await load();
          });
        },
      }, 'Revoke'))));
    fill(listBox, rows.length
      ? table(['Name', 'Role', 'Id', 'Created', 'Created by', ''], rows, { id: 'tokens-table' })
      : empty('No scoped tokens. The startup token (admin) always works.'));
  };
  const role = h('select', null, ['viewer', 'operator', 'admin'].map((r) => h('option', { value: r }, r)));
  const submit = h('button', { type: 'submit', id: 'token-submit' }, 'Create token');
  const form = h('form', { id: 'token-form', class: 'card form', novalidate: true },
    h('h2', null, 'New token'),
    field('token-name', 'Name', h('input', { required: true, autocomplete: 'off', placeholder: 'ci-readonly' })),
    field('token-role', 'Role', role, 'viewer: read only, no snapshot contents; operator: also runs jobs, downloads and restores to a local folder; admin: everything.'),
    submit);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    action(submit, async () => {
      const t = await api('/api/v1/tokens', { method: 'POST', body: { name: $('token-name').value.trim(), role: role.value }, signal });
      $('token-name').value = '';
      fill(secretBox,
        h('h2', null, 'Token ', t.name, ' (', t.role, ')'),
        h('p', null, 'Its secret is shown only now: copy it into the tool or file that will use it.'),
        h('p', { class: 'mono wrap', id: 'token-secret' }, t.secret));
      secretBox.hidden = false;
      await load();
    });
  });
  view.append(secretBox, form, section('Tokens', listBox));
  await load();
}

// ---------------------------------------------------------------- diff

function diffHref(uuid, id, against) {
  return '#/sites/' + enc(uuid) + '/snapshots/' + enc(id) + '/diff' + (against ? '?against=' + enc(against) : '');
}

// diffPage shows what changed from snapshot `against` (default: the
// previous snapshot of the site) to snapshot id; a select picks another
// snapshot of the same site to compare with.
async function diffPage(view, signal, uuid, id, against) {
  const [site, snaps] = await Promise.all([
    api('/api/v1/sites/' + enc(uuid), { signal }),
    api('/api/v1/sites/' + enc(uuid) + '/snapshots', { signal }),
  ]);
  const list = snaps.snapshots;
  const i = list.findIndex((s) => s.id === id || s.short_id === id);
  if (i < 0) throw new Error('snapshot ' + id + ' is not one of ' + site.name + '\'s');
  const snap = list[i];
  const others = list.filter((s) => s.id !== snap.id);
  const base = against ? others.find((s) => s.id === against || s.short_id === against) : list[i + 1];
  const page = h('div', { id: 'diff-page', 'data-snapshot-id': snap.id, 'data-against': base ? base.id : '' });
  view.append(page);
  const pick = h('select', {
    id: 'diff-against', 'aria-label': 'compare with',
    onchange: (ev) => { location.hash = diffHref(uuid, snap.id, ev.target.value); },
  }, others.map((s) => h('option', { value: s.id, selected: base && s.id === base.id }, s.short_id + ' — ' + fmtTime(s.time))));
  const head = [
    h('h1', null, 'Changes in ', h('a', { href: '#/sites/' + enc(uuid) + '/snapshots' }, site.name)),
    h('p', null, 'Snapshot ', h('a', { href: snapshotHref(uuid, snap.id, ''), class: 'mono' }, snap.short_id), ' (', fmtTime(snap.time), ') compared with ',
      others.length ? pick : h('span', { class: 'muted' }, 'no other snapshot')),
  ];
  if (!base) {
    fill(page, ...head, empty(others.length ? 'Pick a snapshot to compare with.' : 'This is the site\'s only snapshot: nothing to compare with.'));
    return;
  }
  fill(page, ...head, h('p', { class: 'muted' }, 'Comparing… (restic diff)'));
  const d = await api('/api/v1/snapshots/' + enc(snap.id) + '/diff?against=' + enc(base.id), { signal });
  const t = d.totals;
  // Paths are shown below the snapshot's root (the site's staging folder).
  const root = (snap.paths && snap.paths[0]) || '';
  const rel = (p) => (root && p.startsWith(root + '/') ? p.slice(root.length + 1) : p);
  const rows = (entries, kind) => entries.map((e) => h('tr', { 'data-testid': 'diff-' + kind, 'data-path': e.path },
    h('td', { class: 'mono wrap', title: e.path }, rel(e.path)), h('td', null, e.type || '—'),
    h('td', { class: 'nowrap' }, e.type === 'dir' ? '' : kind === 'changed' ? fmtBytes(e.old_size || 0) + ' → ' + fmtBytes(e.size) : fmtBytes(e.size))));
  const part = (title, entries, kind) => section(title + ' (' + fmtNum(entries.length) + ')', entries.length
    ? table(['Path', 'Type', 'Size'], rows(entries, kind), { id: 'diff-' + kind + '-table' })
    : empty('None.'));
  fill(page, ...head,
    section('Totals', dl([
      ['Added', fmtNum(t.added) + ' (' + fmtBytes(t.added_bytes) + ')'],
      ['Removed', fmtNum(t.removed) + ' (' + fmtBytes(t.removed_bytes) + ')'],
      ['Changed', fmtNum(t.changed) + ' (' + (t.changed_bytes < 0 ? '−' + fmtBytes(-t.changed_bytes) : '+' + fmtBytes(t.changed_bytes)) + ')'],
    ], { id: 'diff-totals' }),
    d.truncated ? h('p', { class: 'muted' }, 'The lists are cut at 5000 entries each; the totals count every path.') : null),
    part('Added', d.added, 'added'), part('Removed', d.removed, 'removed'), part('Changed', d.changed, 'changed'));
  page.dataset.loaded = '1';
}

// ---------------------------------------------------------------- check

function checkCard(check) {
  const c = check || {};
  return section('Repository check',
    dl([
      ['Status', badge(c.status, { 'data-testid': 'check-status' })],
      ['Last success', when(c.last_success_at)],
      c.error ? ['Error', h('span', { class: 'error-text' }, c.error)] : null,
    ]),
    h('p', null, h('a', { href: '#/check' }, 'Check details')));
}

async function checkPage(view, signal) {
  const box = h('div', { id: 'check-page' });
  view.append(h('h1', null, 'Repository check'), box);
  const load = async () => {
    const [s, jobs, schedules] = await Promise.all([
      api('/api/v1/check', { signal }),
      api('/api/v1/jobs?type=check&limit=10', { signal }),
      api('/api/v1/schedules', { signal }).catch((err) => { if (err.status === 401) throw err; return null; }),
    ]);
    const next = ((schedules && schedules.schedules) || []).find((x) => x.kind === 'check');
    const now = h('button', {
      type: 'button', id: 'check-now', disabled: !!s.active_job,
      title: s.active_job ? 'A check is ' + s.active_job.status : 'restic check of the local repository and the offsite one',
      onclick: (ev) => action(ev.currentTarget, async () => {
        const res = await api('/api/v1/check', { method: 'POST', signal });
        location.hash = '#/jobs/' + enc(res.job_id);
      }),
    }, 'Check now');
    const repoRows = (s.repositories || []).map((r) => h('tr', { 'data-testid': 'check-repo', 'data-name': r.name, 'data-status': r.status },
      h('td', null, r.name), h('td', { class: 'mono wrap' }, r.repository), h('td', null, badge(r.status)),
      h('td', null, when(r.checked_at)), h('td', null, fmtDuration(Math.round((r.duration_ms || 0) / 1000))),
      h('td', { class: 'wrap' }, r.error ? h('span', { class: 'error-text' }, r.error) : '—')));
    fill(box,
      h('div', { class: 'actions' }, can('operator') ? now : null,
        s.active_job ? h('span', null, ' ', jobLink(s.active_job.job_id, 'check ' + s.active_job.status)) : null),
      section('State', dl([
        ['Health', badge(s.health, { id: 'check-health' })],
        ['Last attempt', when(s.last_attempt_at)],
        ['Last result', badge(s.status)],
        ['Last success', when(s.last_success_at)],
        ['Read data subset', s.subset || '—'],
        ['Interval', s.interval_seconds ? fmtDuration(s.interval_seconds) : 'not scheduled'],
        ['Next scheduled check', next ? when(next.next_run_at) : '—'],
        s.error ? ['Error', h('span', { class: 'error-text', id: 'check-error' }, s.error)] : null,
      ])),
      section('Repositories', repoRows.length
        ? table(['Repository', 'Location', 'Result', 'Checked', 'Took', 'Error'], repoRows, { id: 'check-repos' })
        : empty('No check has run yet.')),
      section('Recent check jobs', jobsTable(jobs.jobs, 'check-jobs')));
    box.dataset.loadedAt = String(Date.now());
  };
  await load();
  const reload = reloader(load, signal, 800);
  const statusOf = new Map();
  follow({ site_uuid: '_repo' }, signal, (se) => {
    if (!se.status || statusOf.get(se.job_id) === se.status) return;
    statusOf.set(se.job_id, se.status);
    reload();
  });
}

// ---------------------------------------------------------------- start

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => loggedOut('Logged out.'));
  window.addEventListener('hashchange', route);
  route();
});

// ---------------------------------------------------------------- site policy

function isPaused(site) { return !!(site.policy && site.policy.paused); }

function pausedBadge(site) {
  if (!isPaused(site)) return null;
  return [' ', h('span', { class: 'badge badge-paused', 'data-testid': 'paused', title: site.policy.paused_reason || 'no scheduled jobs' }, 'paused')];
}

// startSiteJob queues a manual job. Inside a maintenance window the API
// answers 409 maintenance_window: the operator is asked, and the job is
// sent again with force.
async function startSiteJob(uuid, type, signal) {
  const path = '/api/v1/sites/' + enc(uuid) + '/jobs';
  try {
    return await api(path, { method: 'POST', body: { type }, signal });
  } catch (err) {
    if (err.code !== 'maintenance_window') throw err;
    if (!confirm(err.message + '\n\nStart the ' + type + ' job anyway?')) return null;
    return api(path, { method: 'POST', body: { type, force: true }, signal });
  }
}

// windowText is a maintenance window in the CLI's form:
// [NAME=][DAYS ]HH:MM-HH:MM[ ZONE].
function windowText(w) {
  return (w.name ? w.name + '=' : '') + (w.days && w.days.length ? w.days.join(',') + ' ' : '') +
    w.start + '-' + w.end + (w.timezone ? ' ' + w.timezone : '');
}

function parseWindow(line) {
  const w = {};
  let rest = line;
  const eq = rest.indexOf('=');
  if (eq >= 0) { w.name = rest.slice(0, eq).trim(); rest = rest.slice(eq + 1); }
  const parts = rest.trim().split(/\s+/);
  const i = parts.findIndex((p) => p.includes(':'));
  if (i < 0 || !parts[i].includes('-')) throw new Error('maintenance window "' + line + '": want [NAME=][DAYS ]HH:MM-HH:MM[ ZONE]');
  const days = parts.slice(0, i).join(',').split(',').filter(Boolean);
  if (days.length) w.days = days;
  [w.start, w.end] = parts[i].split('-');
  if (parts[i + 1]) w.timezone = parts[i + 1];
  return w;
}

const KEEPS = ['keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly'];

// policyReadOnly shows a site's policy without a way to change it.
function policyReadOnly(p) {
  const sc = p.schedule || {};
  const ret = p.retention || {};
  const keeps = KEEPS.filter((k) => ret[k]).map((k) => k + ' ' + ret[k]).join(', ');
  const windows = (p.maintenance_windows || []).map((w) => (w.days || []).join(',') + ' ' + w.start + '–' + w.end + (w.timezone ? ' ' + w.timezone : '')).join('; ');
  return section('Policy', dl([
    ['Paused', p.paused ? 'yes' + (p.paused_reason ? ' (' + p.paused_reason + ')' : '') : 'no'],
    ['Backup schedule', sc.cron ? sc.cron + (sc.timezone ? ' ' + sc.timezone : '') : sc.interval_minutes ? 'every ' + sc.interval_minutes + ' min' : 'global interval'],
    ['Retention', keeps || 'global'],
    ['Maintenance windows', windows || 'none'],
  ], { id: 'policy-view' }));
}

// policyCard shows and edits the site's policy (PUT /sites/{id}/policy).
// Empty fields follow the global config; the API's errors name the field.
function policyCard(site, signal, reload) {
  // Only an admin changes a site's policy (PUT /sites/{id}/policy): the
  // other roles see it, without a form.
  if (!can('admin')) return policyReadOnly(site.policy || {});
  // The site page re-renders when one of its jobs changes status: keep a
  // form the operator is editing rather than wipe it.
  const open = $('policy-form');
  if (open && open.dataset.dirty === '1' && open.dataset.siteUuid === site.site_uuid) return open.parentElement;
  const p = site.policy || {};
  const sc = p.schedule || {};
  const ret = p.retention || {};
  const kind = sc.cron ? 'cron' : sc.interval_minutes ? 'interval' : 'global';
  const num = (name, value) => h('input', { name, type: 'number', min: 0, value: value || '' });
  const form = h('form', { id: 'policy-form', class: 'form', novalidate: true },
    h('div', { class: 'field check' },
      h('input', { id: 'policy-paused', type: 'checkbox', checked: !!p.paused }),
      h('label', { for: 'policy-paused' }, 'Paused (no scheduled jobs; jobs started by hand still run)')),
    field('policy-reason', 'Reason', h('input', { value: p.paused_reason || '', autocomplete: 'off' })),
    h('div', { class: 'row' },
      field('policy-schedule', 'Backup schedule', h('select', null,
        ['global', 'interval', 'cron'].map((k) => h('option', { value: k, selected: k === kind },
          k === 'global' ? 'global interval' : k)))),
      field('policy-interval', 'Every (minutes)', h('input', { type: 'number', min: 1, value: sc.interval_minutes || '' })),
      field('policy-cron', 'Cron (5 fields)', h('input', { value: sc.cron || '', placeholder: '30 2 * * *', autocomplete: 'off' })),
      field('policy-tz', 'Time zone', h('input', { value: sc.timezone || '', placeholder: 'UTC', autocomplete: 'off' }))),
    h('fieldset', null, h('legend', null, 'Retention (empty: restic_retention_policy)'),
      h('div', { class: 'row' }, KEEPS.map((k) => field('policy-' + k, k.replace('keep_', 'keep '), num(k, ret[k]))),
        field('policy-keep_within', 'keep within', h('input', { value: ret.keep_within || '', placeholder: '30d', autocomplete: 'off' })))),
    field('policy-windows', 'Maintenance windows (one per line)',
      h('textarea', { rows: 2, spellcheck: 'false', placeholder: 'nightly=mon,tue 22:00-02:00 Europe/Berlin' },
        (p.maintenance_windows || []).map(windowText).join('\n')),
      'No job starts inside a window: scheduled runs wait for its end; jobs started by hand ask first.'),
    h('button', { type: 'submit', id: 'policy-save' }, 'Save policy'));
  form.dataset.siteUuid = site.site_uuid;
  form.addEventListener('input', () => { form.dataset.dirty = '1'; });
  form.addEventListener('change', () => { form.dataset.dirty = '1'; });
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    action($('policy-save'), async () => {
      const v = (id) => $(id).value.trim();
      const body = {};
      if ($('policy-paused').checked) {
        body.paused = true;
        if (v('policy-reason')) body.paused_reason = v('policy-reason');
      }
      const k = $('policy-schedule').value;
      if (k === 'interval') body.schedule = { interval_minutes: Number(v('policy-interval')) };
      if (k === 'cron') {
        body.schedule = { cron: v('policy-cron') };
        if (v('policy-tz')) body.schedule.timezone = v('policy-tz');
      }
      const r = {};
      for (const key of KEEPS) if (v('policy-' + key)) r[key] = Number(v('policy-' + key));
      if (v('policy-keep_within')) r.keep_within = v('policy-keep_within');
      if (Object.keys(r).length) body.retention = r;
      const lines = v('policy-windows').split('\n').map((l) => l.trim()).filter(Boolean);
      if (lines.length) body.maintenance_windows = lines.map(parseWindow);
      await api('/api/v1/sites/' + enc(site.site_uuid) + '/policy', { method: 'PUT', body, signal });
      form.dataset.dirty = '';
      await reload();
    });
  });
  return section('Policy', form);
}
