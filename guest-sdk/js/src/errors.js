// The SDK's errors, one class per case of the WIT error variants (the same
// messages as the Rust and Python SDKs). Any error an agent does not catch
// ends the run as `guest_error`.

/** Sets `name` on the prototype, so `String(e)` reads `ClassName: message`. */
function named(cls, name) {
  Object.defineProperty(cls.prototype, 'name', {
    value: name,
    writable: true,
    configurable: true,
  });
  return cls;
}

/**
 * Ends the run as `guest_error` with exactly this message (other uncaught
 * errors read `ErrorName: message`).
 */
export class AgentError extends Error {}
named(AgentError, 'AgentError');

/** Why an LLM call failed: one subclass per case of the WIT `error`. */
export class LlmError extends Error {}
named(LlmError, 'LlmError');

/** The model is not on the run's allow-list (or no LLM was granted). */
export class ModelNotAllowed extends LlmError {
  constructor(model) {
    super(`model not allowed: ${model}`);
    this.model = model;
  }
}
named(ModelNotAllowed, 'ModelNotAllowed');

/** The run's token or cost budget is spent: finish with what you have. */
export class BudgetExhausted extends LlmError {
  constructor() {
    super("the run's LLM budget is exhausted");
  }
}
named(BudgetExhausted, 'BudgetExhausted');

export class RateLimited extends LlmError {
  constructor() {
    super('the LLM provider is rate limiting');
  }
}
named(RateLimited, 'RateLimited');

export class InvalidRequest extends LlmError {
  constructor(detail) {
    super(`invalid LLM request: ${detail}`);
    this.detail = detail;
  }
}
named(InvalidRequest, 'InvalidRequest');

export class ProviderError extends LlmError {
  constructor(detail) {
    super(`LLM provider error: ${detail}`);
    this.detail = detail;
  }
}
named(ProviderError, 'ProviderError');

export class LlmTimeout extends LlmError {
  constructor() {
    super('the LLM request timed out');
  }
}
named(LlmTimeout, 'LlmTimeout');

/**
 * A key-value error. `kind` is `access_denied` (this run was not granted
 * key-value storage), `no_such_bucket`, `decode` (the value is not what
 * `getText`/`getJson` expected) or `other`.
 */
export class KvError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
named(KvError, 'KvError');

/** Why a request failed; `denied` when the host refused it. */
export class HttpError extends Error {
  /**
   * The host refused the request: not on the allow-list, a forbidden
   * address, or over the request budget.
   */
  get denied() {
    return this.message.startsWith('denied');
  }
}
named(HttpError, 'HttpError');
