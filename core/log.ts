/** Logs go to stderr (stdout is reserved for the summary line and reports). */

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose lines carry `name` (e.g. `worker-3`). */
  child(name: string): Logger;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * Secrets the configuration read (REDIS_PASSWORD, RABBITMQ_PASSWORD, the
 * passwords inside REDIS_URL and AMQP_URL), in every spelling they may take
 * in a message (as given, percent-encoded, decoded). redact() masks them
 * wherever they appear, not only inside a URL.
 */
const secrets = new Set<string>();

/** Remembers a secret so that no log line, error line or report ever prints it. */
export function registerSecret(secret: string | null | undefined): void {
  if (!secret) return;
  for (const form of [secret, encodeURIComponent(secret), safeDecode(secret)]) {
    // A one- or two-character "secret" would mask half of every line; such a password is no secret anyway.
    if (form.length >= 3) secrets.add(form);
  }
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Removes the password from any URL-looking text, and every registered secret, so credentials never reach a log. */
export function redact(text: string): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^:@/\s]*):([^@/\s]*)@/gi, '$1$2:***@');
  // Longest first, so a secret that contains another is masked whole.
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) out = out.split(secret).join('***');
  return out;
}

/** A field value as it may be logged: strings redacted, other scalars as they are. */
function redactValue(value: LogFields[string]): LogFields[string] {
  return typeof value === 'string' ? redact(value) : value;
}

export function createLogger(
  opts: { level?: LogLevel; format?: LogFormat; name?: string; write?: (line: string) => void } = {},
): Logger {
  const level = opts.level ?? 'info';
  const format = opts.format ?? 'text';
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const make = (name: string | undefined): Logger => {
    const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
      if (RANK[lvl] < RANK[level]) return;
      const ts = new Date().toISOString();
      if (format === 'json') {
        const safe: LogFields = {};
        // Every field is redacted too: an `error` field carries broker messages, which may quote a URL.
        for (const [k, v] of Object.entries(fields ?? {})) safe[k] = redactValue(v);
        // The line as a whole once more: a field's name could hold a secret as well.
        write(redact(JSON.stringify({ ts, level: lvl, ...(name ? { name } : {}), msg: redact(msg), ...safe })));
      } else {
        const extra = fields
          ? Object.entries(fields)
              .filter(([, v]) => v !== undefined)
              .map(([k, v]) => ` ${redact(k)}=${redact(String(v))}`)
              .join('')
          : '';
        write(`${ts} ${lvl.toUpperCase().padEnd(5)} ${name ? `[${name}] ` : ''}${redact(msg)}${extra}`);
      }
    };
    return {
      debug: (m, f) => emit('debug', m, f),
      info: (m, f) => emit('info', m, f),
      warn: (m, f) => emit('warn', m, f),
      error: (m, f) => emit('error', m, f),
      child: (child) => make(name ? `${name}/${child}` : child),
    };
  };
  return make(opts.name);
}

/** A logger that drops everything (library use, tests). */
export const silentLogger: Logger = createLogger({ write: () => {} });
