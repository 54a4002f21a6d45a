import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { type ChannelCredentials, type ChannelOptions, credentials } from '@grpc/grpc-js';
import { ConfigError } from './config';

// The policy services' side of the control channel. With TLS the client presents its
// certificate and trusts a control plane only when its certificate chains to the configured CA
// and names the expected server name; without TLS it talks to a control plane on this host only,
// because whoever answers on the ADS address decides the policy (for ext-authz: which Firebase
// project's tokens are accepted).

export interface XdsClientTls {
  /** PEM CA bundle the control plane's certificate must chain to. */
  caFile: string;
  /** This client's certificate (its identity: `spiffe://<trust domain>/ext-authz`…) and key. */
  certFile: string;
  keyFile: string;
  /** The name the control plane's certificate must carry (DNS or IP SAN). */
  serverName: string;
}

/** `localhost`, 127.0.0.0/8 and ::1: addresses no other machine can answer on. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare.toLowerCase() === 'localhost') return true;
  if (isIPv4(bare)) return bare.startsWith('127.');
  return bare === '::1' || bare === '0:0:0:0:0:0:0:1';
}

/** The host of `host:port` (IPv6 in brackets). */
export function hostOfAddress(address: string): string {
  return address.slice(0, address.lastIndexOf(':'));
}

/** Environment variable names of one service's control-channel settings. */
export interface XdsChannelVariables {
  address: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  serverName: string;
  allowInsecure: string;
}

export interface XdsChannelSettings {
  address: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  serverName?: string;
  allowInsecure: boolean;
}

export interface XdsChannel {
  address: string;
  /** Undefined: plaintext (to loopback, or to anywhere with allowInsecure). */
  tls?: XdsClientTls;
  allowInsecure: boolean;
}

/**
 * Checks one service's settings; every problem names its variable. The three files go together;
 * the server name defaults to the address's host; without TLS the address must be loopback
 * unless allowInsecure is set. The files must be readable PEM and the key must match the
 * certificate.
 */
export function resolveXdsChannel(settings: XdsChannelSettings, names: XdsChannelVariables): XdsChannel {
  const problems: Array<{ variable: string; message: string }> = [];
  const files = { caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile };
  const given = Object.entries(files).filter(([, value]) => value !== undefined);
  const host = hostOfAddress(settings.address);
  if (given.length > 0 && given.length < 3) {
    for (const [key, value] of Object.entries(files)) {
      if (value === undefined)
        problems.push({
          variable: names[key as keyof typeof files],
          message: `required with ${given.map(([k]) => names[k as keyof typeof files]).join(' and ')} (TLS to the control plane needs the CA, the certificate and its key)`,
        });
    }
  }
  if (given.length === 0) {
    if (settings.serverName !== undefined)
      problems.push({ variable: names.serverName, message: `only meaningful with ${names.caFile} (TLS)` });
    if (!isLoopbackHost(host) && !settings.allowInsecure)
      problems.push({
        variable: names.address,
        message:
          `${settings.address} is not a loopback address: set ${names.caFile}, ${names.certFile} and ${names.keyFile} ` +
          `(mutual TLS), or ${names.allowInsecure}=true to accept policy over plaintext from anyone who answers there`,
      });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if (given.length === 0) return { address: settings.address, allowInsecure: settings.allowInsecure };

  const tls: XdsClientTls = {
    caFile: settings.caFile as string,
    certFile: settings.certFile as string,
    keyFile: settings.keyFile as string,
    serverName: settings.serverName ?? host.replace(/^\[|\]$/g, ''),
  };
  checkPemFiles(tls, names);
  return { address: settings.address, tls, allowInsecure: settings.allowInsecure };
}

function checkPemFiles(tls: XdsClientTls, names: XdsChannelVariables): void {
  const problems: Array<{ variable: string; message: string }> = [];
  const read = (variable: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (error) {
      problems.push({ variable, message: `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? error}` });
      return undefined;
    }
  };
  const ca = read(names.caFile, tls.caFile);
  const cert = read(names.certFile, tls.certFile);
  const key = read(names.keyFile, tls.keyFile);
  const parse = <T>(variable: string, what: string, run: () => T) => {
    try {
      return run();
    } catch (error) {
      problems.push({ variable, message: `${what}: ${error instanceof Error ? error.message : String(error)}` });
      return undefined;
    }
  };
  if (ca) parse(names.caFile, 'not a PEM certificate', () => new X509Certificate(ca));
  const certificate = cert && parse(names.certFile, 'not a PEM certificate', () => new X509Certificate(cert));
  const privateKey = key && parse(names.keyFile, 'not an unencrypted PEM private key', () => createPrivateKey(key));
  if (certificate && privateKey && !certificate.checkPrivateKey(privateKey))
    problems.push({ variable: names.keyFile, message: `is not the key of ${names.certFile}` });
  if (problems.length > 0) throw new ConfigError(problems);
}

/**
 * grpc-js credentials and channel options for the channel: TLS presenting the client
 * certificate, verifying the control plane's chain against the CA and its name against
 * `serverName` (also when the address is an IP); plaintext only as `resolveXdsChannel` allowed.
 * Files are read now: call again to pick up rotated ones.
 */
export function xdsChannelCredentials(channel: XdsChannel): {
  credentials: ChannelCredentials;
  options: ChannelOptions;
} {
  if (!channel.tls) {
    if (!isLoopbackHost(hostOfAddress(channel.address)) && !channel.allowInsecure)
      throw new Error(`refusing plaintext ADS to ${channel.address}: not a loopback address and no TLS configured`);
    return { credentials: credentials.createInsecure(), options: {} };
  }
  const { caFile, certFile, keyFile, serverName } = channel.tls;
  return {
    credentials: credentials.createSsl(readFileSync(caFile), readFileSync(keyFile), readFileSync(certFile)),
    options: { 'grpc.ssl_target_name_override': serverName, 'grpc.default_authority': serverName },
  };
}

/**
 * Identifies the current content of `files` (inode, mtime, size; 'missing' for an absent one),
 * following symlinks: a changed value means a rotated file, also after a Kubernetes `..data` swap.
 */
export function filesStamp(files: readonly string[]): string {
  return files
    .map((file) => {
      try {
        const stat = statSync(file);
        return `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
      } catch {
        return 'missing';
      }
    })
    .join('|');
}
