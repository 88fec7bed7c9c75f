// Write Warden agents in JavaScript.
//
// An agent is a WebAssembly component of the `warden:agent/agent` world.
// With this SDK it is an async function over JSON values, in `app.js`:
//
//     import { agent, log } from 'warden';
//
//     export default agent(async (input) => {
//       log.info(`greeting ${input.name}`);
//       return { greeting: `hello, ${input.name}` };
//     });
//
// Build it with `node guest-sdk/js/build.mjs AGENT_DIR agent.wasm` (which
// bundles it with esbuild and componentizes it with componentize-js) and run
// it with `warden run agent.wasm`.
//
// The agent reaches the world only through what the run was granted: `llm`
// (chat with tools, embeddings), `http` (requests over wasi:http), `kv`
// (key-value storage in the agent's own namespace), `config`, `log` (also
// `console.*`) and `context`. Anything not granted rejects with an error the
// agent can catch. Types and docs: index.d.ts.

export { agent } from './src/agent.js';
export {
  AgentError,
  BudgetExhausted,
  HttpError,
  InvalidRequest,
  KvError,
  LlmError,
  LlmTimeout,
  ModelNotAllowed,
  ProviderError,
  RateLimited,
} from './src/errors.js';
export * as config from './src/config.js';
export * as context from './src/context.js';
export * as http from './src/http.js';
export * as kv from './src/kv.js';
export * as llm from './src/llm.js';
export * as log from './src/log.js';
export { Bucket } from './src/kv.js';
export { Message, Tool, ToolCall } from './src/llm.js';
