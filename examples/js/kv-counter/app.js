// `kv-counter`, in JavaScript: counts how often it was called for a key;
// the count lives in the agent's key-value namespace and survives across
// runs.
//
//     warden run kv_counter.wasm --input '{"key":"visits"}'   // {"key":"visits","count":1,"keys":["visits"]}
//     warden run kv_counter.wasm --input '{"key":"visits"}'   // {"key":"visits","count":2,"keys":["visits"]}

import { agent, AgentError, kv, log } from 'warden';

export default agent(async (input) => {
  if (input !== null && (typeof input !== 'object' || Array.isArray(input))) {
    throw new AgentError('invalid input: expected an object like {"key": "visits"}');
  }
  const key = input !== null && 'key' in input ? input.key : 'visits';
  if (typeof key !== 'string') {
    throw new AgentError('invalid input: `key` must be a string');
  }
  const counters = await kv.Bucket.open('counters');
  const count = await counters.increment(key);
  log.info(`${key} is now ${count}`);
  return { key, count, keys: await counters.keys() };
});
