import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServerCredentials } from '@grpc/grpc-js';
import {
  type ControlChannelCertificates,
  controlPlaneServerName,
  createControlChannelCertificates,
} from '@sekisho/devstack/control-channel-certs';
import { PermissionSet } from '@sekisho/proto/sekisho/policy/v1/policy';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from './config';
import { createLogger } from './logger';
import { type PolicySubscription, subscribePolicy } from './policy-client';
import { type PolicyServer, startPolicyServer } from './testing/policy-server';
import { isLoopbackHost, resolveXdsChannel, type XdsChannelSettings } from './xds-channel';

// The policy services' half of the control channel, over real TLS sockets: a policy is taken
// only from a control plane whose certificate chains to the configured CA and carries the
// expected name; without TLS only from loopback.

const typeUrl = 'type.googleapis.com/sekisho.policy.v1.PermissionSet';
const names = {
  address: 'X_XDS_ADDRESS',
  caFile: 'X_XDS_CA_FILE',
  certFile: 'X_XDS_CERT_FILE',
  keyFile: 'X_XDS_KEY_FILE',
  serverName: 'X_XDS_SERVER_NAME',
  allowInsecure: 'X_XDS_ALLOW_INSECURE',
};

let dir: string;
let pki: ControlChannelCertificates;
let foreign: ControlChannelCertificates;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sekisho-xds-channel-'));
  pki = await createControlChannelCertificates(join(dir, 'pki'));
  foreign = await createControlChannelCertificates(join(dir, 'foreign'));
}, 60_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const problemsOf = (settings: Partial<XdsChannelSettings>) => {
  try {
    resolveXdsChannel({ address: '127.0.0.1:18000', allowInsecure: false, ...settings }, names);
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems.map((p) => `${p.variable}: ${p.message}`);
  }
};

describe('resolveXdsChannel', () => {
  it('allows plaintext to loopback only, unless told otherwise', () => {
    expect(problemsOf({})).toEqual([]);
    expect(problemsOf({ address: 'localhost:18000' })).toEqual([]);
    expect(problemsOf({ address: '[::1]:18000' })).toEqual([]);
    expect(problemsOf({ address: 'control-plane:18000' })).toEqual([
      expect.stringMatching(/^X_XDS_ADDRESS: control-plane:18000 is not a loopback address: set X_XDS_CA_FILE/),
    ]);
    expect(problemsOf({ address: 'control-plane:18000', allowInsecure: true })).toEqual([]);
  });

  it('names the missing files, the unreadable file and a key that does not match', () => {
    expect(problemsOf({ caFile: pki.caFile })).toEqual([
      expect.stringMatching(/^X_XDS_CERT_FILE: required with X_XDS_CA_FILE/),
      expect.stringMatching(/^X_XDS_KEY_FILE: required with X_XDS_CA_FILE/),
    ]);
    expect(problemsOf({ serverName: 'cp' })).toEqual([expect.stringMatching(/^X_XDS_SERVER_NAME: only meaningful/)]);
    const ingress = pki.clients.ingress as { certFile: string; keyFile: string };
    expect(problemsOf({ caFile: join(dir, 'nope.crt'), ...ingress })).toEqual([
      expect.stringMatching(/^X_XDS_CA_FILE: cannot read .*ENOENT/),
    ]);
    expect(problemsOf({ caFile: pki.caFile, certFile: ingress.certFile, keyFile: pki.controlPlane.keyFile })).toEqual([
      'X_XDS_KEY_FILE: is not the key of X_XDS_CERT_FILE',
    ]);
    expect(problemsOf({ caFile: ingress.keyFile, ...ingress })).toEqual([
      expect.stringMatching(/^X_XDS_CA_FILE: not a PEM certificate/),
    ]);
  });

  it('expects the address host as the server name unless one is given', () => {
    const ingress = pki.clients.ingress as { certFile: string; keyFile: string };
    const tls = (settings: Partial<XdsChannelSettings>) =>
      resolveXdsChannel(
        { address: 'cp.internal:18000', allowInsecure: false, caFile: pki.caFile, ...ingress, ...settings },
        names,
      ).tls;
    expect(tls({})?.serverName).toBe('cp.internal');
    expect(tls({ serverName: controlPlaneServerName })?.serverName).toBe(controlPlaneServerName);
  });

  it.each([
    ['127.0.0.1', true],
    ['127.8.9.10', true],
    ['localhost', true],
    ['[::1]', true],
    ['0.0.0.0', false],
    ['10.0.0.1', false],
    ['127.example.com', false],
    ['[::]', false],
  ])('isLoopbackHost(%s) is %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });
});

describe('subscribePolicy over mutual TLS (real sockets)', () => {
  let server: PolicyServer | undefined;
  let subscription: PolicySubscription<PermissionSet> | undefined;
  afterEach(async () => {
    subscription?.close();
    await server?.close();
  });

  /** A control plane presenting `pki`'s (or another) server certificate and requiring client certificates of pki's CA. */
  const controlPlane = (serverPki: ControlChannelCertificates, port = 0) =>
    startPolicyServer(
      port,
      ServerCredentials.createSsl(
        readFileSync(pki.caFile),
        [
          {
            cert_chain: readFileSync(serverPki.controlPlane.certFile),
            private_key: readFileSync(serverPki.controlPlane.keyFile),
          },
        ],
        true,
      ),
    );

  const subscribe = (port: number, serverName = controlPlaneServerName, events: string[] = []) => {
    const applied: string[][] = [];
    const ingress = pki.clients['ext-authz'] as { certFile: string; keyFile: string };
    const channel = resolveXdsChannel(
      { address: `127.0.0.1:${port}`, allowInsecure: false, caFile: pki.caFile, ...ingress, serverName },
      names,
    );
    subscription = subscribePolicy({
      address: `127.0.0.1:${port}`,
      channel,
      nodeId: 'tls-test',
      typeUrl,
      resourceName: 'authz',
      decode: (bytes) => PermissionSet.decode(bytes),
      apply: (policy) => void applied.push(policy.permissions),
      logger: createLogger('test', {
        level: 'info',
        destination: { write: (line: string) => void events.push(JSON.parse(line).event_type) },
      }),
      minBackoffMs: 50,
      maxBackoffMs: 100,
    });
    return applied;
  };

  const until = async (probe: () => boolean, what: string, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!probe()) {
      if (Date.now() > deadline) throw new Error(`${what} not met in ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it('takes the policy from a control plane whose certificate it verified', async () => {
    server = await controlPlane(pki);
    const applied = subscribe(server.port);
    const cp = server;
    await until(() => cp.connected() && cp.requests.length > 0, 'the subscription');
    const nonce = cp.push(typeUrl, 'v1', PermissionSet.encode({ permissions: ['read:x'] }).finish());
    expect((await cp.answerTo(nonce)).errorDetail).toBeUndefined();
    expect(applied).toEqual([['read:x']]);
  });

  it.each([
    ['a certificate of another CA', () => controlPlane(foreign), controlPlaneServerName],
    ['a certificate for another name', () => controlPlane(pki), 'other.sekisho.local'],
  ])('never talks to a control plane with %s', async (_, start, serverName) => {
    server = await start();
    const events: string[] = [];
    subscribe(server.port, serverName, events);
    const cp = server;
    // Three failed attempts go by; none got as far as a request.
    await until(() => events.filter((e) => e === 'policy_stream_error').length >= 3, 'three failed attempts');
    expect(cp.connected()).toBe(false);
    expect(cp.requests).toEqual([]);
  });

  it('reads changed certificate files at the next reconnect', async () => {
    const files = {
      caFile: join(dir, 'rotating-ca.crt'),
      certFile: join(dir, 'rotating.crt'),
      keyFile: join(dir, 'rotating.key'),
    };
    const client = pki.clients['ext-authz'] as { certFile: string; keyFile: string };
    await copyFile(pki.caFile, files.caFile);
    await copyFile(client.certFile, files.certFile);
    await copyFile(client.keyFile, files.keyFile);
    server = await controlPlane(pki);
    const port = server.port;
    const events: string[] = [];
    subscription = subscribePolicy({
      address: `127.0.0.1:${port}`,
      channel: resolveXdsChannel(
        { address: `127.0.0.1:${port}`, allowInsecure: false, ...files, serverName: controlPlaneServerName },
        names,
      ),
      nodeId: 'rotation-test',
      typeUrl,
      resourceName: 'authz',
      decode: (bytes) => PermissionSet.decode(bytes),
      apply: () => {},
      logger: createLogger('test', {
        level: 'info',
        destination: { write: (line: string) => void events.push(JSON.parse(line).event_type) },
      }),
      minBackoffMs: 50,
      maxBackoffMs: 100,
    });
    const first = server;
    await until(() => first.requests.length > 0, 'the first subscription');
    // The client now trusts another CA only; the control plane restarts on the same port.
    await copyFile(foreign.caFile, files.caFile);
    await first.close();
    server = await controlPlane(pki, port);
    const second = server;
    await until(() => events.includes('xds_client_certificate_reloaded'), 'the files to be re-read');
    const failuresAfter = events.lastIndexOf('xds_client_certificate_reloaded');
    await until(
      () => events.slice(failuresAfter).filter((e) => e === 'policy_stream_error').length >= 3,
      'three attempts with the new files',
    );
    expect(second.requests).toEqual([]);
  });

  it('refuses to send plaintext to a control plane off this host', () => {
    expect(() =>
      subscribePolicy({
        address: '10.0.0.1:18000',
        nodeId: 'n',
        typeUrl,
        resourceName: 'authz',
        decode: (bytes) => PermissionSet.decode(bytes),
        apply: () => {},
        logger: createLogger('test', { level: 'silent' }),
      }),
    ).toThrow(/refusing plaintext ADS to 10\.0\.0\.1:18000/);
  });
});
