// `host:port` endpoints: an IPv4 literal, `localhost`, or a DNS name. Shared by the schema
// (which reports the problem) and the IR (which needs host and port).

export interface HostPort {
  host: string;
  port: number;
}

const ipv4Pattern = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const dnsLabel = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;

export function isIPv4(host: string): boolean {
  return ipv4Pattern.test(host);
}

export function isDnsName(host: string): boolean {
  if (host.length > 253) return false;
  const labels = host.split('.');
  // A name made only of digits and dots is a malformed IPv4 literal, not a DNS name.
  if (labels.every((label) => /^\d+$/.test(label))) return false;
  return labels.every((label) => dnsLabel.test(label));
}

/** Parses `host:port`; returns a message naming the problem instead when it is not one. */
export function parseHostPort(text: string): HostPort | { problem: string } {
  const colon = text.lastIndexOf(':');
  if (colon <= 0) return { problem: `"${text}" must be host:port, e.g. 127.0.0.1:3001 or customer-service:3001` };
  const host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= 1 && port <= 65_535)) return { problem: `"${text}" has an invalid port (1-65535)` };
  if (host !== 'localhost' && !isIPv4(host) && !isDnsName(host)) {
    return { problem: `"${text}" has an invalid host: use an IPv4 address, localhost or a DNS name` };
  }
  return { host, port };
}
