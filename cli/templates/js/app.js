// `{{name}}`: greets by name. It counts greetings per name in its own
// key-value namespace, and asks the LLM for the greeting when the run may
// use one (else it says hello itself).

import { agent, kv, llm, log } from 'warden';

export default agent(async (input) => {
  const name = input?.name ?? 'world';
  const times = await (await kv.Bucket.open('greetings')).increment(name);
  let greeting;
  try {
    const answer = await llm.chat(
      [llm.Message.user(`Write a one-line greeting for ${name}.`)],
      { maxTokens: 60 },
    );
    greeting = answer.content.trim();
  } catch (e) {
    if (!(e instanceof llm.LlmError)) throw e;
    log.warn(`no greeting from the LLM (${e.message}); saying hello`);
    greeting = `hello, ${name}`;
  }
  return { greeting, times };
});
