import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

// Paths pino removes from every record: credentials must never reach a log, even
// when a caller logs a whole headers object by mistake.
const redactPaths = [
  'authorization',
  'cookie',
  'token',
  'idToken',
  'id_token',
  'password',
  'secret',
  '*.authorization',
  '*.cookie',
  '*.token',
  '*.idToken',
  '*.id_token',
  '*.password',
  '*.secret',
  'headers.authorization',
  'headers.cookie',
  'headers["x-api-key"]',
  '*.headers.authorization',
  '*.headers.cookie',
];

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

const emailPattern = /[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}/g;
const phonePattern = /\+?\d[\d -]{8,}\d/g;
const jwtPattern = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;

/** Masks emails, phone numbers and JWTs inside free text (error messages, paths). */
export function maskPII(text: string): string {
  return text.replace(jwtPattern, '[TOKEN]').replace(emailPattern, maskEmail).replace(phonePattern, maskPhone);
}
