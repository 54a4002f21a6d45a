// Private keys never leave the control plane in what it shows: the admin API's IR and views,
// the CLI's rendered resources. (They are served to the proxies that need them, over xDS.)

/** Fields holding private keys: never shown, even to an authenticated operator. */
const secretFields = new Set(['privateKeyPem', 'privateKey']);

/** `value` with every private key replaced by "[redacted]". */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value).map(([field, inner]) => [
      field,
      secretFields.has(field) ? '[redacted]' : redactSecrets(inner),
    ]),
  );
}
