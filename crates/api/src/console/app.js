// dynaraft's web console. A client of the DynamoDB API like any SDK: every
// call is signed with SigV4 (WebCrypto) for the credentials the user gave,
// so the server authenticates and authorizes it as it does every request.
// Everything shown from the server goes into the page as text nodes,
// never as markup.
'use strict';

const CONSOLE_TARGET = 'DynaraftConsole_20261204.';
const DYNAMODB_TARGET = 'DynamoDB_20120810.';
const PAGE_SIZE = 25;
const CLUSTER_REFRESH_MS = 3000;
const CREDS_KEY = 'dynaraft.console.credentials';

const state = { config: null, creds: null, timer: null, metrics: null };
const enc = new TextEncoder();

// ---- DOM helpers: text only ----

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function show(...nodes) {
  const main = document.getElementById('main');
  main.replaceChildren(...nodes.flat().filter(n => n !== null && n !== undefined));
}

function showError(err) {
  const box = document.getElementById('error');
  if (!err) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

function table(headers, rows, cls) {
  return el('table', { class: cls },
    el('thead', {}, el('tr', {}, headers.map(h =>
      el('th', { class: h.num ? 'num' : null }, h.label || h)))),
    el('tbody', {}, rows));
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
}

function dash(v) { return v === null || v === undefined ? '–' : String(v); }

// ---- SigV4 ----

function hex(buf) {
  return Array.from(new Uint8Array(buf), b => b.toString(16).padStart(2, '0')).join('');
}

async function sha256(text) {
  return hex(await crypto.subtle.digest('SHA-256', enc.encode(text)));
}

async function hmac(key, text) {
  const k = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await crypto.subtle.sign('HMAC', k, enc.encode(text)));
}

async function call(target, body) {
  const creds = state.creds;
  if (!window.crypto || !crypto.subtle) {
    throw new Error('This page needs a secure context to sign requests (HTTPS, or http://localhost).');
  }
  const payload = JSON.stringify(body || {});
  const amzDate = new Date().toISOString().replace(/[-:]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const headers = {
    'content-type': 'application/x-amz-json-1.0',
    'host': location.host,
    'x-amz-date': amzDate,
    'x-amz-target': target,
  };
  const names = Object.keys(headers).sort();
  const canonical = ['POST', '/', '', names.map(n => n + ':' + headers[n] + '\n').join(''),
    names.join(';'), await sha256(payload)].join('\n');
  const scope = `${day}/${creds.region}/dynamodb/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, await sha256(canonical)].join('\n');
  let key = await hmac(enc.encode('AWS4' + creds.secretAccessKey), day);
  for (const part of [creds.region, 'dynamodb', 'aws4_request']) key = await hmac(key, part);
  const signature = hex(await hmac(key, toSign));
  const sent = Object.assign({}, headers);
  delete sent.host; // the browser sends it
  sent.authorization = `AWS4-HMAC-SHA256 Credential=${creds.accessKeyId}/${scope}, ` +
    `SignedHeaders=${names.join(';')}, Signature=${signature}`;
  const resp = await fetch('/', { method: 'POST', headers: sent, body: payload, credentials: 'omit' });
  const text = await resp.text();
  let json = {};
  try { json = text ? JSON.parse(text) : {}; } catch (_) { json = { message: text }; }
  if (!resp.ok) {
    const type = String(json.__type || resp.status).split('#').pop();
    const err = new Error(`${type}: ${json.message || json.Message || ''}`);
    err.type = type;
    throw err;
  }
  return json;
}

const ddb = (op, body) => call(DYNAMODB_TARGET + op, body);

// ---- DynamoDB values, shown as text ----

function plain(av) {
  const [type, v] = Object.entries(av)[0] || ['NULL', true];
  switch (type) {
    case 'S': case 'N': case 'B': return v;
    case 'BOOL': return v ? 'true' : 'false';
    case 'NULL': return 'null';
    case 'SS': case 'NS': case 'BS': return v;
    case 'L': return v.map(plain);
    case 'M': return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
    default: return v;
  }
}

function valueText(av) {
  const [type] = Object.keys(av);
  const p = plain(av);
  if (type === 'S' || type === 'N' || type === 'B' || type === 'BOOL' || type === 'NULL') return String(p);
  return JSON.stringify(p);
}

function typed(type, text) {
  if (type === 'N') return { N: text.trim() };
  if (type === 'B') return { B: text.trim() };
  return { S: text };
}

// ---- sign-in ----

function loadCreds() {
  try {
    const c = JSON.parse(sessionStorage.getItem(CREDS_KEY) || 'null');
    if (c && c.accessKeyId && c.secretAccessKey && c.region) return c;
  } catch (_) { /* nothing kept */ }
  return null;
}

function signedIn(creds) {
  state.creds = creds;
  sessionStorage.setItem(CREDS_KEY, JSON.stringify(creds));
  document.getElementById('who').textContent = `${creds.accessKeyId} · ${creds.region}`;
  document.getElementById('sign-out').hidden = !needsSignIn();
}

function needsSignIn() {
  return state.config.authenticated || !state.config.sharedDb;
}

function signInView() {
  const cfg = state.config;
  const key = el('input', { name: 'accessKeyId', autocomplete: 'username', required: true });
  const secret = el('input', { name: 'secretAccessKey', type: 'password', autocomplete: 'current-password',
    required: !!cfg.authenticated });
  const region = el('input', { name: 'region', value: cfg.region, required: true });
  const form = el('form', { id: 'sign-in', onsubmit: async ev => {
    ev.preventDefault();
    const creds = { accessKeyId: key.value.trim(), secretAccessKey: secret.value || 'console',
      region: region.value.trim() };
    state.creds = creds;
    try {
      await ddb('ListTables', { Limit: 1 });
      showError(null);
      signedIn(creds);
      route();
    } catch (e) {
      state.creds = null;
      showError(e);
    }
  } },
    el('h1', {}, 'Sign in'),
    el('p', { class: 'muted' }, cfg.authenticated
      ? 'Requests are signed with these credentials and authorized by their policies. They are kept in this tab only.'
      : 'This server keeps a database per access key (without -sharedDb): give the key your application uses.'),
    el('label', {}, 'Access key ID', key),
    el('label', {}, 'Secret access key', secret),
    el('label', {}, 'Region', region),
    el('button', { type: 'submit' }, 'Sign in'));
  show(el('section', { class: 'card signin' }, form));
}

// ---- tables ----

async function listTables() {
  const names = [];
  let start;
  do {
    const r = await ddb('ListTables', start ? { ExclusiveStartTableName: start } : {});
    names.push(...r.TableNames);
    start = r.LastEvaluatedTableName;
  } while (start);
  return Promise.all(names.map(async name => {
    try { return (await ddb('DescribeTable', { TableName: name })).Table; } catch (e) { return { TableName: name, error: e }; }
  }));
}

function keyOf(schema, role) {
  const k = (schema || []).find(k => k.KeyType === role);
  return k ? k.AttributeName : null;
}

function attrType(t, name) {
  const d = (t.AttributeDefinitions || []).find(a => a.AttributeName === name);
  return d ? d.AttributeType : 'S';
}

function keyText(t, schema) {
  return (schema || []).map(k => `${k.AttributeName} (${attrType(t, k.AttributeName)})`).join(', ');
}

function keyInputs(prefix, optional) {
  const name = el('input', { name: prefix + 'Name', required: !optional, placeholder: optional ? 'optional' : '' });
  const type = el('select', { name: prefix + 'Type' }, ['S', 'N', 'B'].map(t => el('option', { value: t }, t)));
  return { name, type };
}

// The attribute definitions and key schema the key inputs describe (the
// sort key only when named).
function keyFromInputs(pk, sk) {
  const keys = [[pk, 'HASH'], [sk, 'RANGE']].filter(([k]) => k.name.value);
  return {
    defs: keys.map(([k]) => ({ AttributeName: k.name.value, AttributeType: k.type.value })),
    schema: keys.map(([k, role]) => ({ AttributeName: k.name.value, KeyType: role })),
  };
}

async function tablesView() {
  const tables = await listTables();
  const pk = keyInputs('pk', false);
  const sk = keyInputs('sk', true);
  const name = el('input', { name: 'tableName', required: true, pattern: '[A-Za-z0-9_.\\-]{3,255}' });
  const create = el('form', { class: 'inline', id: 'create-table', onsubmit: async ev => {
    ev.preventDefault();
    const { defs, schema } = keyFromInputs(pk, sk);
    await act(() => ddb('CreateTable', { TableName: name.value, AttributeDefinitions: defs, KeySchema: schema,
      BillingMode: 'PAY_PER_REQUEST' }));
  } },
    el('label', {}, 'Table name', name),
    el('label', {}, 'Partition key', pk.name), el('label', {}, 'Type', pk.type),
    el('label', {}, 'Sort key', sk.name), el('label', {}, 'Type', sk.type),
    el('button', { type: 'submit' }, 'Create table'));
  const rows = tables.map(t => t.error
    ? el('tr', {}, el('td', {}, t.TableName), el('td', { colspan: 8, class: 'muted' }, t.error.message))
    : el('tr', { 'data-table': t.TableName },
      el('td', {}, el('a', { href: '#/table/' + encodeURIComponent(t.TableName) }, t.TableName)),
      el('td', {}, t.TableStatus),
      el('td', {}, keyText(t, t.KeySchema.filter(k => k.KeyType === 'HASH'))),
      el('td', {}, keyText(t, t.KeySchema.filter(k => k.KeyType === 'RANGE')) || '–'),
      el('td', {}, [...(t.GlobalSecondaryIndexes || []), ...(t.LocalSecondaryIndexes || [])]
        .map(i => i.IndexName).join(', ') || '–'),
      el('td', { class: 'num' }, dash(t.ItemCount)),
      el('td', { class: 'num' }, bytes(t.TableSizeBytes)),
      el('td', {}, (t.BillingModeSummary || {}).BillingMode || 'PROVISIONED'),
      el('td', {}, el('button', { class: 'danger', type: 'button', onclick: async () => {
        if (!confirm(`Delete table ${t.TableName} and every item in it?`)) return;
        await act(() => ddb('DeleteTable', { TableName: t.TableName }));
      } }, 'Delete'))));
  show(
    el('h1', {}, 'Tables'),
    el('section', { class: 'card' }, el('h2', {}, 'Create a table'), create,
      el('p', { class: 'muted' }, 'On-demand capacity. More settings: the API or the AWS CLI.')),
    tables.length
      ? table(['Name', 'Status', 'Partition key', 'Sort key', 'Indexes', { label: 'Items', num: true },
        { label: 'Size', num: true }, 'Billing', ''], rows, 'tables')
      : el('p', { class: 'muted', id: 'no-tables' }, 'No tables yet.'));
}

// Runs an action, shows its error if it fails, and redraws the view.
async function act(fn) {
  try {
    await fn();
    showError(null);
  } catch (e) {
    showError(e);
    return;
  }
  route();
}

// ---- one table: details, indexes, items ----

async function tableView(name) {
  const t = (await ddb('DescribeTable', { TableName: name })).Table;
  const gsis = t.GlobalSecondaryIndexes || [];
  const lsis = t.LocalSecondaryIndexes || [];
  const details = el('dl', { class: 'kv' },
    el('dt', {}, 'Status'), el('dd', {}, t.TableStatus),
    el('dt', {}, 'Keys'), el('dd', {}, keyText(t, t.KeySchema)),
    el('dt', {}, 'Items'), el('dd', { id: 'item-count' }, dash(t.ItemCount)),
    el('dt', {}, 'Size'), el('dd', {}, bytes(t.TableSizeBytes)),
    el('dt', {}, 'Billing'), el('dd', {}, (t.BillingModeSummary || {}).BillingMode || 'PROVISIONED'),
    el('dt', {}, 'ARN'), el('dd', { class: 'mono' }, t.TableArn),
    t.LatestStreamArn ? [el('dt', {}, 'Stream'), el('dd', { class: 'mono' }, t.LatestStreamArn)] : null);
  const indexRows = [
    ...gsis.map(i => el('tr', {}, el('td', {}, i.IndexName), el('td', {}, 'global'), el('td', {}, keyText(t, i.KeySchema)),
      el('td', {}, i.Projection.ProjectionType), el('td', {}, i.IndexStatus + (i.Backfilling ? ' (backfilling)' : '')),
      el('td', { class: 'num' }, dash(i.ItemCount)), el('td', { class: 'num' }, bytes(i.IndexSizeBytes)))),
    ...lsis.map(i => el('tr', {}, el('td', {}, i.IndexName), el('td', {}, 'local'), el('td', {}, keyText(t, i.KeySchema)),
      el('td', {}, i.Projection.ProjectionType), el('td', {}, 'ACTIVE'),
      el('td', { class: 'num' }, dash(i.ItemCount)), el('td', { class: 'num' }, bytes(i.IndexSizeBytes)))),
  ];
  const ipk = keyInputs('ipk', false);
  const isk = keyInputs('isk', true);
  const iname = el('input', { name: 'indexName', required: true });
  const addIndex = el('form', { class: 'inline', id: 'add-index', onsubmit: async ev => {
    ev.preventDefault();
    const { defs, schema } = keyFromInputs(ipk, isk);
    const create = { IndexName: iname.value, KeySchema: schema, Projection: { ProjectionType: 'ALL' } };
    const pt = t.ProvisionedThroughput;
    if (((t.BillingModeSummary || {}).BillingMode || 'PROVISIONED') === 'PROVISIONED' && pt) {
      create.ProvisionedThroughput = { ReadCapacityUnits: pt.ReadCapacityUnits, WriteCapacityUnits: pt.WriteCapacityUnits };
    }
    await act(() => ddb('UpdateTable', { TableName: name, AttributeDefinitions: defs,
      GlobalSecondaryIndexUpdates: [{ Create: create }] }));
  } },
    el('label', {}, 'Index name', iname),
    el('label', {}, 'Partition key', ipk.name), el('label', {}, 'Type', ipk.type),
    el('label', {}, 'Sort key', isk.name), el('label', {}, 'Type', isk.type),
    el('button', { type: 'submit' }, 'Add global index'));
  show(
    el('h1', {}, el('a', { href: '#/tables' }, 'Tables'), ' / ', t.TableName),
    el('section', { class: 'card' }, details),
    el('section', { class: 'card' }, el('h2', {}, 'Indexes'),
      indexRows.length ? table(['Name', 'Kind', 'Keys', 'Projection', 'Status', { label: 'Items', num: true },
        { label: 'Size', num: true }], indexRows) : el('p', { class: 'muted' }, 'No secondary indexes.'),
      el('h2', {}, 'Add a global secondary index'), addIndex),
    itemBrowser(t));
}

function itemBrowser(t) {
  const indexes = [{ name: '', schema: t.KeySchema },
    ...(t.GlobalSecondaryIndexes || []).map(i => ({ name: i.IndexName, schema: i.KeySchema })),
    ...(t.LocalSecondaryIndexes || []).map(i => ({ name: i.IndexName, schema: i.KeySchema }))];
  const mode = el('select', { name: 'mode' }, el('option', { value: 'Scan' }, 'Scan'), el('option', { value: 'Query' }, 'Query'));
  const index = el('select', { name: 'index' }, indexes.map(i => el('option', { value: i.name }, i.name || t.TableName + ' (table)')));
  const pkValue = el('input', { name: 'pkValue' });
  const op = el('select', { name: 'skOp' }, ['', '=', '<', '<=', '>', '>=', 'begins_with', 'between']
    .map(o => el('option', { value: o }, o || '(any sort key)')));
  const skValue = el('input', { name: 'skValue' });
  const skValue2 = el('input', { name: 'skValue2', placeholder: 'and (between)' });
  const limit = el('input', { name: 'limit', type: 'number', min: 1, max: 1000, value: PAGE_SIZE });
  const results = el('div', { id: 'items' });
  const pages = [];
  let request = null;

  const pkLabel = el('span', {});
  const skLabel = el('span', {});
  const queryFields = el('span', { class: 'query-fields' },
    el('label', {}, pkLabel, pkValue), el('label', {}, skLabel, op), el('label', {}, 'Value', skValue), skValue2);
  function sync() {
    const schema = indexes[index.selectedIndex].schema;
    pkLabel.textContent = (keyOf(schema, 'HASH') || '') + ' =';
    skLabel.textContent = keyOf(schema, 'RANGE') ? keyOf(schema, 'RANGE') : '(no sort key)';
    queryFields.hidden = mode.value !== 'Query';
  }
  mode.addEventListener('change', sync);
  index.addEventListener('change', sync);
  sync();

  function build() {
    const req = { TableName: t.TableName, Limit: Math.max(1, Math.min(1000, Number(limit.value) || PAGE_SIZE)) };
    if (index.value) req.IndexName = index.value;
    if (mode.value === 'Query') {
      const schema = indexes[index.selectedIndex].schema;
      const pk = keyOf(schema, 'HASH');
      const sk = keyOf(schema, 'RANGE');
      req.ExpressionAttributeNames = { '#pk': pk };
      req.ExpressionAttributeValues = { ':pk': typed(attrType(t, pk), pkValue.value) };
      let cond = '#pk = :pk';
      if (sk && op.value) {
        req.ExpressionAttributeNames['#sk'] = sk;
        req.ExpressionAttributeValues[':sk'] = typed(attrType(t, sk), skValue.value);
        if (op.value === 'begins_with') cond += ' AND begins_with(#sk, :sk)';
        else if (op.value === 'between') {
          req.ExpressionAttributeValues[':sk2'] = typed(attrType(t, sk), skValue2.value);
          cond += ' AND #sk BETWEEN :sk AND :sk2';
        } else cond += ` AND #sk ${op.value} :sk`;
      }
      req.KeyConditionExpression = cond;
    }
    return req;
  }

  async function load(startKey) {
    const req = Object.assign({}, request);
    if (startKey) req.ExclusiveStartKey = startKey;
    try {
      const r = await ddb(mode.value === 'Query' ? 'Query' : 'Scan', req);
      showError(null);
      render(r, startKey);
    } catch (e) {
      showError(e);
    }
  }

  function render(r, startKey) {
    const items = r.Items || [];
    const keys = t.KeySchema.map(k => k.AttributeName);
    const names = [...new Set([...keys, ...items.flatMap(i => Object.keys(i))])];
    const rows = items.map(i => el('tr', {}, names.map(n => {
      const av = i[n];
      return el('td', { title: av ? Object.keys(av)[0] : null }, av ? valueText(av) : '');
    })));
    const first = pages.reduce((n, p) => n + p, 0) + 1;
    const pager = el('div', { class: 'pager' },
      el('button', { type: 'button', class: 'secondary', id: 'first-page', disabled: !startKey, onclick: () => {
        pages.length = 0; load(null);
      } }, 'First page'),
      el('span', { class: 'muted', id: 'page-info' }, items.length
        ? `Items ${first}–${first + items.length - 1}` : 'No items on this page'),
      el('button', { type: 'button', id: 'next-page', disabled: !r.LastEvaluatedKey, onclick: () => {
        pages.push(items.length); load(r.LastEvaluatedKey);
      } }, 'Next page'));
    results.replaceChildren(
      items.length ? table(names, rows, 'items') : el('p', { class: 'muted' }, 'No items.'), pager);
  }

  const form = el('form', { class: 'inline', id: 'browse', onsubmit: ev => {
    ev.preventDefault();
    request = build();
    pages.length = 0;
    load(null);
  } },
    el('label', {}, 'Operation', mode), el('label', {}, 'Table or index', index), queryFields,
    el('label', {}, 'Page size', limit), el('button', { type: 'submit' }, 'Run'));
  request = build();
  load(null);
  return el('section', { class: 'card' }, el('h2', {}, 'Items'), form, results);
}

// ---- the cluster ----

// The Prometheus text's request counts and latency sums by operation.
function parseMetrics(text) {
  const ops = {};
  const re = /^dynaraft_successful_request_latency_seconds_(count|sum|bucket)\{([^}]*)\} ([0-9.eE+-]+|\+Inf|NaN)$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map(x => [x[1], x[2]]));
    const o = ops[labels.operation] || (ops[labels.operation] = { count: 0, sum: 0, buckets: {} });
    const v = Number(m[3]);
    if (m[1] === 'count') o.count = v;
    else if (m[1] === 'sum') o.sum = v;
    else o.buckets[labels.le] = v;
  }
  return { at: performance.now(), ops };
}

// Requests a second, mean and p99 latency per operation between two reads.
function rates(prev, cur) {
  const rows = [];
  const secs = (cur.at - prev.at) / 1000;
  for (const [op, c] of Object.entries(cur.ops)) {
    const p = prev.ops[op] || { count: 0, sum: 0, buckets: {} };
    const n = c.count - p.count;
    if (n <= 0) continue;
    const bounds = Object.keys(c.buckets).filter(k => k !== '+Inf').sort((a, b) => Number(a) - Number(b));
    const within = bounds.find(k => c.buckets[k] - (p.buckets[k] || 0) >= 0.99 * n);
    const p99 = within === undefined ? null : Number(within);
    rows.push({ op, rate: n / secs, mean: (c.sum - p.sum) / n, p99 });
  }
  return rows.sort((a, b) => b.rate - a.rate);
}

async function readMetrics() {
  const r = await fetch('/metrics', { credentials: 'omit' });
  if (!r.ok) return null;
  return parseMetrics(await r.text());
}

async function clusterView() {
  const [c, metrics] = await Promise.all([call(CONSOLE_TARGET + 'DescribeCluster', {}), readMetrics().catch(() => null)]);
  const zones = {};
  for (const n of c.nodes) (zones[n.az] || (zones[n.az] = [])).push(n);
  const zoneCards = Object.keys(zones).sort().map(z => el('section', { class: 'card zone', 'data-zone': z },
    el('h3', {}, 'Zone ', z),
    table(['Node', 'Address', 'State', { label: 'Replicas', num: true }, { label: 'Leading', num: true }],
      zones[z].map(n => el('tr', { 'data-node': n.id },
        el('td', {}, n.id), el('td', { class: 'mono' }, n.addr),
        el('td', { class: n.up ? 'up' : 'down' }, n.up ? (n.draining ? 'up, draining' : 'up') : 'down'),
        el('td', { class: 'num' }, dash(n.replicas)), el('td', { class: 'num' }, dash(n.leading)))))));
  const partRows = c.partitions.map(p => el('tr', { 'data-group': p.group },
    el('td', {}, p.table), el('td', {}, p.index || '–'), el('td', { class: 'num' }, p.group),
    el('td', { class: 'mono' }, p.hash_from, ' – ', p.hash_to || 'end'),
    el('td', { class: 'num' }, dash(p.items)), el('td', { class: 'num' }, bytes(p.bytes)),
    el('td', { class: 'num' }, dash(p.load_per_s)),
    el('td', { class: 'leader' }, dash(p.leader)),
    el('td', {}, p.lag.map(l => `${l.node}${l.node === p.leader ? '*' : ''}: ${l.entries === null ? '?' : l.entries}`).join(' · ')),
    el('td', { class: 'num' }, dash(p.index_backlog)),
    el('td', {}, p.splitting ? `splitting at ${p.splitting[0]}` : '')));
  const replRows = c.replication.map(r => el('tr', {},
    el('td', {}, r.table), el('td', { class: 'num' }, r.group), el('td', {}, r.region),
    el('td', { class: 'num' }, r.backlog), el('td', { class: 'num' }, r.lag_ms), el('td', {}, r.copied ? 'yes' : 'no')));
  let requestSection;
  if (!metrics) {
    requestSection = el('p', { class: 'muted' }, 'This server serves /metrics elsewhere (--metrics-listen), or not at all.');
  } else if (!state.metrics) {
    requestSection = el('p', { class: 'muted', id: 'rates-pending' }, 'Measuring…');
  } else {
    const rows = rates(state.metrics, metrics).map(r => el('tr', {},
      el('td', {}, r.op), el('td', { class: 'num' }, r.rate.toFixed(1)),
      el('td', { class: 'num' }, (r.mean * 1000).toFixed(2)),
      el('td', { class: 'num' }, r.p99 === null ? '> 5000' : '≤ ' + (r.p99 * 1000).toFixed(1))));
    requestSection = rows.length
      ? table(['Operation', { label: 'Requests/s', num: true }, { label: 'Mean ms', num: true }, { label: 'p99 ms', num: true }], rows, 'rates')
      : el('p', { class: 'muted', id: 'no-requests' }, 'No requests in the last few seconds.');
  }
  state.metrics = metrics;
  show(
    el('h1', {}, 'Cluster ', el('span', { class: 'muted' }, `· region ${c.region} · catalog version ${c.catalog_version}`)),
    el('h2', {}, 'Zones and nodes'), el('div', { class: 'zones' }, zoneCards),
    el('h2', {}, 'Requests (this endpoint, successful)'), requestSection,
    el('h2', {}, 'Partitions'),
    c.partitions.length
      ? table(['Table', 'Index', { label: 'Group', num: true }, 'Hash range', { label: 'Items', num: true },
        { label: 'Size', num: true }, { label: 'Load/s', num: true }, 'Leader', 'Lag (entries behind the leader)',
        { label: 'Index backlog', num: true }, ''], partRows, 'partitions')
      : el('p', { class: 'muted' }, 'No tables you may describe.'),
    replRows.length ? [el('h2', {}, 'Replication to other regions'),
      table(['Table', { label: 'Group', num: true }, 'Region', { label: 'Backlog', num: true },
        { label: 'Lag ms', num: true }, 'Copied'], replRows)] : null);
}

// ---- routing ----

async function route() {
  clearTimeout(state.timer);
  state.timer = null;
  if (!state.creds) { signInView(); return; }
  const hash = location.hash || '#/tables';
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('active', hash.startsWith(a.getAttribute('href')));
  }
  try {
    if (hash.startsWith('#/table/')) {
      await tableView(decodeURIComponent(hash.slice('#/table/'.length)));
    } else if (hash === '#/cluster') {
      await clusterView();
      state.timer = setTimeout(() => { if (location.hash === '#/cluster') route(); }, CLUSTER_REFRESH_MS);
    } else {
      state.metrics = null;
      await tablesView();
    }
  } catch (e) {
    showError(e);
    if (e.type === 'UnrecognizedClientException' || e.type === 'InvalidSignatureException' ||
        e.type === 'MissingAuthenticationTokenException') {
      signOut();
    }
  }
}

function signOut() {
  sessionStorage.removeItem(CREDS_KEY);
  state.creds = null;
  document.getElementById('who').textContent = '';
  document.getElementById('sign-out').hidden = true;
  signInView();
}

async function start() {
  const r = await fetch('/console/config.json', { credentials: 'omit' });
  state.config = await r.json();
  document.getElementById('sign-out').addEventListener('click', signOut);
  const kept = loadCreds();
  if (kept) signedIn(kept);
  else if (!needsSignIn()) {
    // Any signature is accepted and every key sees the same tables.
    signedIn({ accessKeyId: 'console', secretAccessKey: 'console', region: state.config.region });
  }
  window.addEventListener('hashchange', route);
  route();
}

start().catch(showError);
