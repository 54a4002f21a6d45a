import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

// Paths pino removes from every record: credentials must never reach a log, even
// when a caller logs a whole headers object by mistake. Each name is redacted at the
// top level, one level down (`headers.cookie`, `error_details.token`) and two levels
// down inside a `headers` object (`request.headers.authorization`).
const secretFields = [
  'authorization',
  'proxy-authorization',
  'cookie',
  'set-cookie',
  'x-api-key',
  'token',
  'idToken',
  'id_token',
  'accessToken',
  'access_token',
  'refreshToken',
  'refresh_token',
  'password',
  'secret',
];
const redactPaths = secretFields.flatMap((field) => {
  const key = `[${JSON.stringify(field)}]`;
  return [key, `*${key}`, `*.headers${key}`];
});

export function createLogger(service: string, opts: { level?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? 'info',
      base: { service },
      messageKey: 'message',
      timestamp: () => `,"timestamp":"${new Date().toISOString()}"`,
      formatters: { level: (label) => ({ level: label.toUpperCase() }) },
      redact: { paths: redactPaths, censor: '[REDACTED]' },
    },
    opts.destination,
  );
}

/** taro.yamada@example.com → ta***@example.com */
export function maskEmail(email: string): string {
  const at = email.lastIndexOf('@');
  if (at < 1) return '***';
  return `${email.slice(0, Math.min(2, at))}***${email.slice(at)}`;
}

/** +81 90-1234-5678 → ***5678 (only the last four digits stay). */
export function maskPhone(phone: string): string {
  const digits = phone.replace(/\D/g, '');
  return digits.length <= 4 ? '***' : `***${digits.slice(-4)}`;
}

// Each pattern may only start where a run of its characters starts (the lookbehinds):
// without that, a long run that never completes a match (60 KB of letters in a path)
// is rescanned from every position, which costs seconds of CPU per log line.
const emailPattern = /(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/g;
const phonePattern = /(?<!\d)\+?\d[\d -]{8,}\d/g;
const jwtPattern = /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;

/** Masks emails, phone numbers and JWTs inside free text (error messages, paths). Linear time. */
export function maskPII(text: string): string {
  return text.replace(jwtPattern, '[TOKEN]').replace(emailPattern, maskEmail).replace(phonePattern, maskPhone);
}
