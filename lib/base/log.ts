/**
 * Structured log lines: `time level message key=value…` for people, or one JSON object
 * per line for machines. Values are quoted so that no field can break a line.
 */

/** How log lines are written: readable text, or one JSON object per line. */
export type LogFormat = "text" | "json";

/** Fields of a log line; undefined ones are left out. */
export type Fields = Record<string, string | number | boolean | undefined>;

/** Where natter reports what happens. */
export interface Logger {
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
}

/** A logger that drops everything, for tests and embedding. */
export const SILENT: Logger = { info() {}, warn() {}, error() {} };

/** Settings of {@link createLogger}. */
export interface LoggerOptions {
  format?: LogFormat;
  /** Drop info lines. */
  quiet?: boolean;
  /** Receives each finished line; defaults to stdout for info, stderr otherwise. */
  write?: (line: string, level: "info" | "warn" | "error") => void;
  now?: () => Date;
}

const PLAIN = /^[\w.:/@+-]*$/;

function textValue(value: string | number | boolean): string {
  const text = String(value);
  return PLAIN.test(text) && text !== "" ? text : JSON.stringify(text);
}

/** Builds a logger writing text or JSON lines. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const format = options.format ?? "text";
  const now = options.now ?? (() => new Date());
  const write = options.write ??
    ((line, level) => (level === "info" ? console.log : console.error)(line));
  const line = (level: "info" | "warn" | "error", message: string, fields: Fields = {}) => {
    const time = now().toISOString();
    const present = Object.entries(fields).filter((
      entry,
    ): entry is [string, string | number | boolean] => entry[1] !== undefined);
    if (format === "json") {
      return write(
        JSON.stringify({ time, level, msg: message, ...Object.fromEntries(present) }),
        level,
      );
    }
    const pairs = present.map(([key, value]) => ` ${key}=${textValue(value)}`).join("");
    write(`${time} ${level.toUpperCase().padEnd(5)} ${message}${pairs}`, level);
  };
  return {
    info: (message, fields) => options.quiet ? undefined : line("info", message, fields),
    warn: (message, fields) => line("warn", message, fields),
    error: (message, fields) => line("error", message, fields),
  };
}
