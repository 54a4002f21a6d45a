import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, issueClientCertificate } from '@sekisho/devstack/tls-certs';
import { Node } from '@sekisho/proto/envoy/config/core/v3/base';
import { describe, expect, it } from 'vitest';
import { typeUrls } from '../xds/type-urls';
import { allowedViews, authorize, claimedViews, type PeerIdentity, peerIdentityOf } from './identity';

const td = 'sekisho.local';
const id = (uris: string[], dnsNames: string[] = [], commonName?: string): PeerIdentity => ({
  uris,
  dnsNames,
  ...(commonName ? { commonName } : {}),
});

describe('allowedViews', () => {
  it.each([
    ['the ingress URI', id(['spiffe://sekisho.local/ingress']), ['ingress']],
    ['ext-authz', id(['spiffe://sekisho.local/ext-authz']), ['ext-authz']],
    ['the rate-limit service', id(['spiffe://sekisho.local/ratelimit']), ['ratelimit']],
    ["a service's sidecar", id(['spiffe://sekisho.local/sidecar/customer']), ['sidecar:customer']],
    [
      'two URIs',
      id(['spiffe://sekisho.local/ratelimit', 'spiffe://sekisho.local/ext-authz']),
      ['ext-authz', 'ratelimit'],
    ],
    ['another trust domain', id(['spiffe://example.org/ingress']), []],
    ['a trust domain that only starts the same', id(['spiffe://sekisho.local.evil/ingress']), []],
    ['an unknown path', id(['spiffe://sekisho.local/admin']), []],
    ['a deeper path', id(['spiffe://sekisho.local/ingress/extra']), []],
    ['a sidecar without a service', id(['spiffe://sekisho.local/sidecar']), []],
    ['a DNS SAN when there is no URI SAN', id([], ['ingress.sekisho.local']), ['ingress']],
    ['a sidecar DNS SAN', id([], ['customer.sidecar.sekisho.local']), ['sidecar:customer']],
    [
      'DNS SANs are ignored once a URI SAN of the domain exists',
      id(['spiffe://sekisho.local/ratelimit'], ['ingress.sekisho.local']),
      ['ratelimit'],
    ],
    ['a DNS SAN of another domain', id([], ['ingress.sekisho.local.example.com']), []],
    ['the common name alone', id([], [], 'ingress.sekisho.local'), []],
  ])('%s', (_, identity, views) => {
    expect(allowedViews(identity, td)).toEqual(views);
  });
});

describe('claimedViews', () => {
  it.each([
    ['sekisho-ingress', ['ingress']],
    ['sekisho', ['ext-authz', 'ratelimit']],
    ['sidecar:customer', ['sidecar:customer']],
    ['sidecar:Not Valid', []],
    ['anything-else', []],
    ['', []],
  ])('cluster %j claims %j', (cluster, views) => {
    expect(claimedViews(Node.fromPartial({ id: 'n', cluster }))).toEqual(views);
  });
});

describe('authorize', () => {
  const node = (cluster: string) => Node.fromPartial({ id: 'n1', cluster });

  it('gives the ingress the Envoy types and none of the policy types', () => {
    const decision = authorize(node('sekisho-ingress'), id(['spiffe://sekisho.local/ingress']), td);
    expect(decision.ok).toBe(true);
    if (!decision.ok) return;
    expect(decision.views).toEqual(['ingress']);
    expect([...decision.types].sort()).toEqual(
      [typeUrls.cluster, typeUrls.endpoint, typeUrls.listener, typeUrls.route, typeUrls.secret].sort(),
    );
  });

  it('gives a policy service exactly its own policy type, decided by the certificate', () => {
    const authz = authorize(node('sekisho'), id(['spiffe://sekisho.local/ext-authz']), td);
    const ratelimit = authorize(node('sekisho'), id(['spiffe://sekisho.local/ratelimit']), td);
    expect(authz.ok && [...authz.types]).toEqual([typeUrls.authzPolicy]);
    expect(ratelimit.ok && [...ratelimit.types]).toEqual([typeUrls.rateLimitPolicy]);
  });

  it.each([
    ['no certificate', node('sekisho-ingress'), undefined, /no verified certificate/],
    [
      'a policy identity claiming the ingress',
      node('sekisho-ingress'),
      id(['spiffe://sekisho.local/ext-authz']),
      /allows ext-authz .*claims ingress/,
    ],
    [
      'the ingress claiming a sidecar',
      node('sidecar:customer'),
      id(['spiffe://sekisho.local/ingress']),
      /claims sidecar:customer/,
    ],
    [
      "one sidecar claiming another's view",
      node('sidecar:billing'),
      id(['spiffe://sekisho.local/sidecar/customer']),
      /allows sidecar:customer/,
    ],
    ['an unknown node cluster', node('mystery'), id(['spiffe://sekisho.local/ingress']), /names no view/],
    ['an identity with no view', node('sekisho'), id([], [], 'ext-authz'), /allows no view/],
  ])('refuses %s', (_, n, identity, reason) => {
    const decision = authorize(n, identity, td);
    expect(decision.ok).toBe(false);
    expect(!decision.ok && decision.reason).toMatch(reason);
  });
});

describe('peerIdentityOf', () => {
  it('reads URI and DNS SANs and the common name of a real certificate', async () => {
    const ca = await createCertificateAuthority('Test CA');
    const issued = await issueClientCertificate(ca, {
      commonName: 'ingress',
      uris: ['spiffe://sekisho.local/ingress'],
      dnsNames: ['ingress.sekisho.local', 'odd,name.example'],
    });
    const der = new X509Certificate(issued.certificatePem).raw;
    expect(peerIdentityOf(der)).toEqual({
      uris: ['spiffe://sekisho.local/ingress'],
      dnsNames: ['ingress.sekisho.local', 'odd,name.example'],
      commonName: 'ingress',
    });
    expect(new X509Certificate(issued.certificatePem).keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']); // clientAuth
  });

  it('is undefined without a certificate', () => {
    expect(peerIdentityOf(undefined)).toBeUndefined();
    expect(peerIdentityOf(Buffer.alloc(0))).toBeUndefined();
  });
});
