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

/** Removes the password from any URL-looking text, so credentials never reach a log. */
export function redact(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^:@/\s]*):([^@/\s]*)@/gi, '$1$2:***@');
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
        write(JSON.stringify({ ts, level: lvl, ...(name ? { name } : {}), msg: redact(msg), ...fields }));
      } else {
        const extra = fields
          ? Object.entries(fields)
              .filter(([, v]) => v !== undefined)
              .map(([k, v]) => ` ${k}=${redact(String(v))}`)
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
