#!/usr/bin/env node
// Builds a JavaScript agent (a directory whose entry is app.js) into a
// component of the warden:agent/agent world:
//
//   node guest-sdk/js/build.mjs examples/js/kv-counter /tmp/kv_counter.wasm
//
// 1. bundles app.js, the `warden` SDK (this directory) and whatever else it
//    imports into one ES module with esbuild (imports of WIT interfaces,
//    `wasi:…` and `warden:…`, stay imports, versioned from the WIT);
// 2. componentizes the bundle with componentize-js (SpiderMonkey inside; it
//    runs the module's top level while it builds).
//
// The WIT is ../../wit from this script unless --wit DIR says otherwise.
// componentize-js and esbuild are looked up in AGENT_DIR/node_modules, then
// this directory's node_modules, then the global npm root (`npm root -g`).

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The versions this SDK was built and tested with. */
const PINNED = {
  '@bytecodealliance/componentize-js': '0.23.0',
  esbuild: '0.28.2',
};
const INSTALL = `npm install -g ${Object.entries(PINNED).map(([n, v]) => `${n}@${v}`).join(' ')}`;

const USAGE = `usage: node build.mjs AGENT_DIR OUT.wasm [--wit DIR] [--world NAME] [--keep]

  AGENT_DIR   a directory with app.js (or app.ts), whose default export (or
              export \`run\`) is the agent: export default agent(async (input) => ...)
  OUT.wasm    the component to write
  --wit DIR   the WIT directory (default: ../../wit from this script)
  --world W   the world (default: agent)
  --keep      keep the bundled JavaScript and print where it is

needs ${Object.entries(PINNED).map(([n, v]) => `${n}@${v}`).join(' and ')}:
  ${INSTALL}`;

const sdkDir = dirname(fileURLToPath(import.meta.url));

/** `path` relative to the working directory when it is below it. */
function shown(path) {
  const cwd = process.cwd();
  const rel = relative(cwd, path);
  return cwd !== '/' && rel && !rel.startsWith('..') ? rel : path;
}

function say(line) {
  process.stderr.write(`warden: ${line}\n`);
}

/** A failure to report as is (no stack), with the exit status. */
class BuildError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

function fail(message, code = 1) {
  throw new BuildError(message, code);
}

function parseArgs(argv) {
  const opts = { wit: join(sdkDir, '..', '..', 'wit'), world: 'agent', keep: false, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else if (a === '--wit' || a === '--world') {
      if (i + 1 >= argv.length) fail(`${a} needs a value\n${USAGE}`, 2);
      opts[a.slice(2)] = argv[++i];
    } else if (a.startsWith('--wit=') || a.startsWith('--world=')) {
      const [k, v] = a.slice(2).split(/=(.*)/s);
      opts[k] = v;
    } else if (a === '--keep') {
      opts.keep = true;
    } else if (a.startsWith('-')) {
      fail(`unknown option ${a}\n${USAGE}`, 2);
    } else {
      opts.positional.push(a);
    }
  }
  if (opts.positional.length !== 2) fail(USAGE, 2);
  return opts;
}

/** The global npm root, or null when npm is not there. */
function npmRootGlobal() {
  const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['root', '-g'], {
    encoding: 'utf8',
  });
  const out = r.status === 0 ? r.stdout.trim() : '';
  return out || null;
}

/** Where `name` is installed: the first of `roots` holding it. */
function findPackage(name, roots) {
  for (const root of roots) {
    const pj = join(root, ...name.split('/'), 'package.json');
    if (existsSync(pj)) {
      return { dir: dirname(pj), pkg: JSON.parse(readFileSync(pj, 'utf8')) };
    }
  }
  return null;
}

/** The file `import(name)` would load from the package in `dir`. */
function entryUrl({ dir, pkg }) {
  const pick = (x) => {
    if (typeof x === 'string') return x;
    if (x && typeof x === 'object') return pick(x['.'] ?? x.import ?? x.node ?? x.default ?? x.require);
    return undefined;
  };
  const rel = pick(pkg.exports) ?? pkg.module ?? pkg.main ?? 'index.js';
  return pathToFileURL(join(dir, rel)).href;
}

/** `ns:pkg` → version, from every `package` declaration under the WIT dir. */
function witPackages(witDir) {
  const versions = new Map();
  const walk = (path) => {
    const st = statSync(path);
    if (st.isDirectory()) {
      for (const e of readdirSync(path)) walk(join(path, e));
    } else if (path.endsWith('.wit')) {
      const text = readFileSync(path, 'utf8');
      for (const m of text.matchAll(/^\s*package\s+([a-z][a-z0-9-]*:[a-z][a-z0-9-]*)(?:@([^\s;{]+))?\s*[;{]/gm)) {
        versions.set(m[1], m[2] ?? null);
      }
    }
  };
  walk(witDir);
  return versions;
}

/** The esbuild plugin: `warden` is this SDK; WIT interfaces stay imports. */
function wardenPlugin(witVersions, witDir) {
  return {
    name: 'warden',
    setup(build) {
      build.onResolve({ filter: /^warden$/ }, () => ({ path: join(sdkDir, 'index.js') }));
      build.onResolve({ filter: /^[a-z][a-z0-9-]*:/ }, (args) => {
        const spec = args.path;
        if (spec.startsWith('node:')) {
          return {
            errors: [{ text: `${spec}: Node's built-in modules are not available in a component (use warden's http, kv, log...)` }],
          };
        }
        const m = /^([a-z][a-z0-9-]*:[a-z][a-z0-9-]*)\/([a-z][a-z0-9-]*)(@[^/]+)?$/.exec(spec);
        if (!m) return undefined; // a URL or some other scheme: esbuild decides
        if (!witVersions.has(m[1])) {
          return { errors: [{ text: `${spec}: no WIT package ${m[1]} under ${witDir}` }] };
        }
        const version = witVersions.get(m[1]);
        const path = m[3] || !version ? spec : `${spec}@${version}`;
        return { path, external: true };
      });
    },
  };
}

function formatEsbuildErrors(e) {
  const errors = e && Array.isArray(e.errors) ? e.errors : null;
  if (!errors || errors.length === 0) return String(e && e.message ? e.message : e);
  return errors
    .map((m) => {
      const loc = m.location ? `${m.location.file}:${m.location.line}:${m.location.column}: ` : '';
      return `${loc}${m.text}`;
    })
    .join('\n');
}

async function main() {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 18) fail(`Node.js 18 or newer is needed (this is ${process.versions.node})`);
  const opts = parseArgs(process.argv.slice(2));
  const agentDir = resolve(opts.positional[0]);
  const out = resolve(opts.positional[1]);
  const witDir = resolve(opts.wit);

  const app = ['app.js', 'app.mjs', 'app.ts'].map((f) => join(agentDir, f)).find((f) => existsSync(f));
  if (!app) fail(`${agentDir} has no app.js (the agent's entry)`);
  if (!existsSync(witDir) || !statSync(witDir).isDirectory()) {
    fail(`no WIT directory at ${witDir} (give one with --wit DIR)`);
  }

  // Find the tools.
  const roots = [join(agentDir, 'node_modules'), join(sdkDir, 'node_modules')];
  const globalRoot = npmRootGlobal();
  if (globalRoot) roots.push(globalRoot);
  const found = {};
  const missing = [];
  for (const name of Object.keys(PINNED)) {
    found[name] = findPackage(name, roots);
    if (!found[name]) missing.push(`${name}@${PINNED[name]}`);
  }
  if (missing.length) {
    fail(
      `${missing.join(' and ')} not found (looked in ${roots.join(', ')}${globalRoot ? '' : ' and npm root -g, which failed'}).\n` +
        `Install ${missing.length > 1 ? 'them' : 'it'} with:\n  npm install -g ${missing.join(' ')}`,
    );
  }
  for (const [name, f] of Object.entries(found)) {
    if (f.pkg.version !== PINNED[name]) {
      say(`using ${name} ${f.pkg.version} from ${f.dir}; this SDK is tested with ${PINNED[name]} (${INSTALL})`);
    }
  }
  const esbuildMod = await import(entryUrl(found.esbuild));
  const esbuild = typeof esbuildMod.build === 'function' ? esbuildMod : esbuildMod.default;
  const { componentize } = await import(entryUrl(found['@bytecodealliance/componentize-js']));

  const started = Date.now();
  const witVersions = witPackages(witDir);
  const work = mkdtempSync(join(tmpdir(), 'warden-js-'));
  let ok = false;
  try {
    // 1. Bundle. First app.js alone, to check it exports an agent.
    say(`bundling ${shown(app)} (esbuild ${found.esbuild.pkg.version})`);
    const common = {
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      keepNames: true,
      charset: 'utf8',
      legalComments: 'none',
      logLevel: 'silent',
      absWorkingDir: agentDir,
      plugins: [wardenPlugin(witVersions, witDir)],
    };
    let probe;
    try {
      probe = await esbuild.build({ ...common, entryPoints: [app], write: false, metafile: true, outfile: join(work, 'probe.js') });
    } catch (e) {
      fail(`bundling failed:\n${formatEsbuildErrors(e)}`);
    }
    const exported = Object.values(probe.metafile.outputs).flatMap((o) => o.exports ?? []);
    if (!exported.includes('default') && !exported.includes('run')) {
      fail(
        `${shown(app)} exports no agent: write\n` +
          "  import { agent } from 'warden';\n  export default agent(async (input) => { ... });",
      );
    }
    const entry = join(work, 'entry.js');
    writeFileSync(
      entry,
      `import * as app from ${JSON.stringify(app)};\n` +
        `import { serve } from ${JSON.stringify(join(sdkDir, 'src', 'agent.js'))};\n` +
        'export const run = serve(app);\n',
    );
    const bundle = join(work, 'agent.bundle.js');
    try {
      await esbuild.build({ ...common, entryPoints: [entry], outfile: bundle, write: true });
    } catch (e) {
      fail(`bundling failed:\n${formatEsbuildErrors(e)}`);
    }

    // 2. Componentize.
    say(`componentizing (componentize-js ${found['@bytecodealliance/componentize-js'].pkg.version}, 10 to 30 s)`);
    // From inside the work dir: componentize-js maps the working directory
    // into the engine when the source is below it, and mangles the path
    // when the working directory is `/`.
    let component;
    const cwd = process.cwd();
    try {
      process.chdir(work);
      ({ component } = await componentize({ sourcePath: bundle, witPath: witDir, worldName: opts.world }));
    } catch (e) {
      fail(`componentize-js failed:\n${e && e.message ? e.message : e}`);
    } finally {
      process.chdir(cwd);
    }
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, component);
    const mib = (component.length / 1024 / 1024).toFixed(1);
    say(`wrote ${shown(out)} (${mib} MiB) in ${Math.round((Date.now() - started) / 1000)} s`);
    ok = true;
  } finally {
    if (opts.keep) say(`the bundle is in ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
  return ok;
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (e) => {
    const known = e instanceof BuildError;
    process.stderr.write(`warden: ${known ? e.message : e && e.stack ? e.stack : String(e)}\n`);
    process.exit(known ? e.code : 1);
  },
);
